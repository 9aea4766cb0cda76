import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext } from 'playwright-core';
import { hasChromium, launchChromium, warnIfNoChromium } from '../helpers/chromium.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { RedisServer } from '../helpers/redis-server.ts';
import { eventually } from '../helpers/cluster-store.ts';

/**
 * The live page's cluster section in a real headless Chromium (Debian's package, as the
 * status-page test; skipped with a message only where /usr/bin/chromium is missing): two
 * instances (Apps with `cluster:`) on one real redis-server, one of which sees a Connector down.
 */
warnIfNoChromium('cluster-page');

describe.skipIf(!hasChromium)('live page: the cluster section', () => {
  const redis = new RedisServer();
  let a: TestProxy;
  let b: TestProxy;
  let context: BrowserContext;
  let closeBrowser: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    await redis.start();
    // Config-only Connectors (documentation addresses, no active checks): up until a test says otherwise.
    const connectors = ['conn-a', 'conn-b'].map((id, i) => ({ id, address: `192.0.2.${i + 1}`, ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' as const }));
    const cfg = (id: string) => testConfig(connectors, { cluster: { instanceId: id, keyPrefix: 'i10p', redis: { url: redis.url }, timeouts: { heartbeat: '200ms' } } });
    [a, b] = await Promise.all([startTestProxy(cfg('lb-a')), startTestProxy(cfg('lb-b'))]);
    ({ context, close: closeBrowser } = await launchChromium({ width: 1280, height: 900 }, 'i10-chromium-'));
  }, 60_000);

  afterAll(async () => {
    await closeBrowser?.();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis.cleanup();
  });

  it('lists both instances with their view of each Connector, and where they disagree', async () => {
    // Health is per instance: lb-b cannot reach conn-b.
    b.app.pool.setHealth('conn-b', 'down', 'pcoip: connect ECONNREFUSED');
    await eventually(() => a.app.cluster!.status().disagreements.length > 0, 5000, 'lb-a sees the disagreement');
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (msg) => (msg.type() === 'error' ? errors.push(msg.text()) : undefined));
    await page.goto(`${a.adminUrl}/`);
    await page.waitForSelector('#cluster tr[data-instance="lb-b"] td[data-connector="conn-b"] .badge.down', { timeout: 10_000 });
    expect(await page.textContent('#cluster tr[data-instance="lb-a"] td.id')).toBe('lb-a (this)');
    expect(await page.textContent('#cluster tr[data-instance="lb-a"] td[data-connector="conn-b"]')).toBe('up active');
    expect(await page.textContent('#cluster [data-disagreement="conn-b:health"]')).toBe('conn-b health: lb-a up · lb-b down (pcoip: connect ECONNREFUSED)');
    expect(await page.getAttribute('#cluster-store', 'data-store')).toBe('up');
    const shot = join(tmpdir(), 'pcoip-lb-cluster-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.info(`cluster page screenshot: ${shot}`);

    // Back up on lb-b: the disagreement goes away.
    b.app.pool.setHealth('conn-b', 'up');
    await page.waitForSelector('#cluster-disagreements li:not([data-disagreement])', { timeout: 10_000 });
    expect(await page.textContent('#cluster-disagreements')).toBe('the instances agree on every Connector');
    expect(errors).toEqual([]);
  });
});
