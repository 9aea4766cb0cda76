import { describe, expect, it } from 'vitest';
import { judgeHealthResponse } from '../../src/health/checks.ts';

describe('judging a Connector /health answer', () => {
  it.each([
    { status: 200, body: '{"code":200,"status":"success"}', ok: true, reason: '' },
    { status: 200, body: '{"status":"SUCCESS"}', ok: true, reason: '' },
    { status: 500, body: '{"code":500,"status":"Error","reason":"Cannot communicate with broker"}', ok: false, reason: 'HTTP 500: Cannot communicate with broker' },
    { status: 500, body: 'oops', ok: false, reason: 'HTTP 500' },
    { status: 503, body: '', ok: false, reason: 'HTTP 503' },
    { status: 200, body: '<html>login</html>', ok: false, reason: 'HTTP 200 without "status": "success" in a JSON body' },
    { status: 200, body: '{"status":"Error"}', ok: false, reason: 'HTTP 200 without "status": "success" in a JSON body' },
    { status: 500, body: '{"reason":"line one\\nline two\\u0007"}', ok: false, reason: 'HTTP 500: line one line two' },
  ])('$status $body', ({ status, body, ok, reason }) => {
    expect(judgeHealthResponse(status, body)).toEqual({ ok, reason });
  });

  it('cuts a very long reason', () => {
    const verdict = judgeHealthResponse(500, JSON.stringify({ reason: 'x'.repeat(1000) }));
    expect(verdict.reason.length).toBeLessThan(220);
  });
});
