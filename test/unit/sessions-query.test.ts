import { describe, expect, it } from 'vitest';
import { parseQuery } from '../../src/admin/sessions-api.ts';

describe('GET /sessions query', () => {
  it('takes the documented filters', () => {
    expect(parseQuery(new URLSearchParams('connector=conn-a&client=198.51.100.7&state=streaming&sort=started&offset=5&limit=20'))).toEqual({
      connector: 'conn-a', client: '198.51.100.7', state: 'streaming', sort: 'started', offset: 5, limit: 20,
    });
  });

  it.each([
    ['limit=0', /limit must be a whole number from 1 to 500/],
    ['limit=501', /limit must be a whole number from 1 to 500/],
    ['offset=-1', /offset must be a whole number/],
    ['client=not-an-address', /client "not-an-address" is not an IPv4 or IPv6 address/],
    ['state=dancing', /state "dancing" is not one of/],
    ['sort=size', /sort "size" is not quality or started/],
    ['colour=red', /unknown query parameter "colour"/],
  ])('refuses %s with a message naming it', (query, message) => {
    const parsed = parseQuery(new URLSearchParams(query));
    expect('error' in parsed && parsed.error).toMatch(message);
  });

  it('echoes at most 64 characters of a hostile value, so the error stays small', () => {
    for (const key of ['client', 'state', 'sort']) {
      const parsed = parseQuery(new URLSearchParams({ [key]: 'x'.repeat(8000) }));
      if (!('error' in parsed)) throw new Error(`${key}: accepted`);
      expect(parsed.error).toContain(`"${'x'.repeat(64)}…"`);
      expect(parsed.error.length).toBeLessThan(200);
    }
    const unknown = parseQuery(new URLSearchParams({ ['k'.repeat(8000)]: '1' }));
    expect('error' in unknown && unknown.error.length).toBeLessThan(200);
  });
});
