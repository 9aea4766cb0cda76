import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { hasChromium, launchChromium, warnIfNoChromium } from '../helpers/chromium.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { startCheckedConnector, clientPlacedOn, type CheckedConnector } from '../helpers/checked-connector.ts';

/**
 * The live page in a real headless Chromium (Debian's package, installed by .ci/run). Like the
 * promtool test, it may skip only where its tool cannot be installed: /usr/bin/chromium missing,
 * it says so and skips.
 */

// The page.evaluate / waitForFunction callbacks run in the browser; these types (the project has no DOM lib) describe what they use there.
interface BrowserElement {
  textContent: string | null;
  classList: { contains(name: string): boolean };
  getAttribute(name: string): string | null;
  getBoundingClientRect(): { width: number };
}
declare const document: {
  querySelector(selector: string): BrowserElement | null;
  getElementById(id: string): BrowserElement | null;
  documentElement: { scrollWidth: number; clientWidth: number };
  body: BrowserElement;
};
declare const window: { plbFormat: { duration(seconds: number): string } };
warnIfNoChromium('status-page');

describe.skipIf(!hasChromium)('live status page in headless Chromium', () => {
  let connectors: CheckedConnector[];
  let proxy: TestProxy;
  let context: BrowserContext;
  let closeBrowser: (() => Promise<void>) | undefined;
  let profile: string;

  beforeAll(async () => {
    connectors = await Promise.all([startCheckedConnector('conn-a', '127.0.1.71'), startCheckedConnector('conn-b', '127.0.1.72')]);
    proxy = await startTestProxy(testConfig(connectors.map((c) => c.config()), { health: { interval: '300ms', timeout: '300ms', rise: 2, fall: 2, jitter: '0%' } }));
    // Narrower than a desktop screen, so a table widened by a long reason would show.
    ({ context, profile, close: closeBrowser } = await launchChromium({ width: 1024, height: 700 }, 'plb13b-chromium-'));
  }, 60_000);

  afterAll(async () => {
    await closeBrowser?.();
    await proxy?.stop();
    await Promise.all((connectors ?? []).map((c) => c.close()));
  });

  const healthOf = (id: string, status: 'up' | 'down') => `tr[data-connector="${id}"] [data-field="health"].badge.${status}`;
  const text = async (page: Page, selector: string) => (await page.textContent(selector))?.trim();

  async function openPage(): Promise<{ page: Page; consoleErrors: string[] }> {
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    page.on('console', (msg) => (msg.type() === 'error' ? consoleErrors.push(msg.text()) : undefined));
    page.on('pageerror', (err) => consoleErrors.push(String(err)));
    await page.goto(`${proxy.adminUrl}/`);
    await page.waitForSelector(healthOf('conn-a', 'up'), { timeout: 10_000 });
    await page.waitForSelector(healthOf('conn-b', 'up'), { timeout: 10_000 });
    return { page, consoleErrors };
  }

  it('shows a Connector turning down (with the reason) and back up; a long reason wraps inside the table', async () => {
    // A live session on each Connector so the page has clients and flows to show.
    const sessions = await Promise.all(['conn-a', 'conn-b'].map((id) => tcpGreeting(proxy.addresses.pcoipTcp.port, clientPlacedOn(proxy.app, id))));
    const { page, consoleErrors } = await openPage();
    await page.waitForFunction(() => document.querySelector('tr[data-connector="conn-a"] [data-field="live"]')?.textContent === '1 live');
    expect(await text(page, 'tr[data-connector="conn-a"] [data-field="clients"]')).toBe('1 pinned');
    expect(await text(page, '#t-up')).toBe('2 / 2');

    connectors[0]!.broker.setHealth({ kind: 'error', reason: 'Cannot communicate with broker' });
    await page.waitForSelector(healthOf('conn-a', 'down'), { timeout: 10_000 });
    expect(await text(page, 'tr[data-connector="conn-a"] [data-field="reason"]')).toBe('broker /health: HTTP 500: Cannot communicate with broker');
    expect(await text(page, '#t-up')).toBe('1 / 2');
    // One Connector still takes new clients: no outage alarm.
    expect(await page.isVisible('#alarm')).toBe(false);

    // A reason of 200 characters without a space (the longest a check keeps) must not widen the page.
    const long = 'E'.repeat(200);
    connectors[0]!.broker.setHealth({ kind: 'error', reason: long });
    await page.waitForFunction((l) => document.querySelector('tr[data-connector="conn-a"] [data-field="reason"]')?.textContent?.endsWith(l), long);
    const widths = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      viewport: document.documentElement.clientWidth,
      reason: document.querySelector('tr[data-connector="conn-a"] [data-field="reason"]')!.getBoundingClientRect().width,
    }));
    expect(widths.page).toBeLessThanOrEqual(widths.viewport);
    expect(widths.reason).toBeLessThanOrEqual(360);
    await page.screenshot({ path: join(profile, 'status-page-down.png'), fullPage: true });

    connectors[0]!.broker.setHealth({ kind: 'ok' });
    await page.waitForSelector(healthOf('conn-a', 'up'), { timeout: 10_000 });
    expect(await page.$('tr[data-connector="conn-a"] [data-field="reason"]')).toBeNull();
    expect(await text(page, '#t-up')).toBe('2 / 2');

    // The session ends: it is no longer live, but its client stays pinned within the affinity TTL.
    sessions[0]!.socket.destroy();
    await page.waitForFunction(() => document.querySelector('tr[data-connector="conn-a"] [data-field="live"]')?.textContent === '0 live');
    expect(await text(page, 'tr[data-connector="conn-a"] [data-field="clients"]')).toBe('1 pinned');
    expect(await text(page, '#t-live')).toBe('1');
    expect(await text(page, '#t-clients')).toBe('2');
    expect(consoleErrors).toEqual([]);
    sessions[1]!.socket.destroy();
    await page.close();
  });

  it('raises an outage alarm when no Connector takes new clients, and counts the refusals', async () => {
    const { page, consoleErrors } = await openPage();
    expect(await page.isVisible('#alarm')).toBe(false);
    for (const id of ['conn-a', 'conn-b']) expect((await fetch(`${proxy.adminUrl}/connectors/${id}/maint`, { method: 'POST' })).status).toBe(200);
    try {
      await page.waitForSelector('#alarm', { state: 'visible', timeout: 5000 });
      expect(await page.evaluate(() => document.body.classList.contains('alarm'))).toBe(true);
      expect(await text(page, '#alarm-detail')).toBe('2 of 2 Connector(s) up; 2 in drain or maint. Established sessions keep running.');
      // A new client now is refused, and the page says so.
      await expect(tcpGreeting(proxy.addresses.broker.port, '127.0.2.251')).rejects.toThrow();
      await page.waitForFunction(() => Number(document.getElementById('t-refused')?.textContent) >= 1, undefined, { timeout: 5000 });
      expect(await text(page, '#t-refused-detail')).toMatch(/^since start: no-eligible-connector \d+/);
      expect(await page.evaluate(() => document.getElementById('tile-refused')!.classList.contains('bad'))).toBe(true);
    } finally {
      for (const id of ['conn-a', 'conn-b']) await fetch(`${proxy.adminUrl}/connectors/${id}/enable`, { method: 'POST' });
    }
    await page.waitForSelector('#alarm', { state: 'hidden', timeout: 5000 });
    expect(await text(page, 'tr[data-connector="conn-a"] [data-field="connect-failures"]')).toBe('0');
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  it('charts each Connector\'s throughput from the server\'s clock; uptime and rates in human units', async () => {
    const { page, consoleErrors } = await openPage();
    const session = await tcpGreeting(proxy.addresses.pcoipTcp.port, clientPlacedOn(proxy.app, 'conn-b', 100));
    // About 1.3 Mbit/s each way for 3 s: the fake Connector echoes every byte.
    const chunk = Buffer.alloc(8192, 1);
    for (let i = 0; i < 60; i++) {
      session.socket.write(chunk);
      await new Promise((r) => setTimeout(r, 50));
    }
    const points = await page.waitForFunction(() => Number(document.querySelector('#chart polyline[data-connector="conn-b"]')?.getAttribute('data-points')) >= 2, undefined, { timeout: 5000 });
    expect(points).toBeTruthy();
    // The idle Connector has a line too (flat), and each has a legend entry.
    expect(await page.$('#chart polyline[data-connector="conn-a"]')).not.toBeNull();
    expect(await text(page, '#legend [data-connector="conn-b"]')).toMatch(/^conn-b \d+(\.\d)? (bit|kbit|Mbit)\/s$/);
    // The chart spans a real height: the busy line reaches above the idle one.
    const heights = await page.evaluate(() => {
      const ys = (id: string) => document.querySelector(`#chart polyline[data-connector="${id}"]`)!.getAttribute('points')!.split(' ').map((p: string) => Number(p.split(',')[1]));
      return { busy: Math.min(...ys('conn-b')), idle: Math.min(...ys('conn-a')) };
    });
    expect(heights.busy).toBeLessThan(heights.idle);
    expect(await text(page, '#meta')).toMatch(/^v\S+ · up \d+ s · /);
    expect(await page.evaluate(() => window.plbFormat.duration(2 * 86400 + 4 * 3600 + 59))).toBe('2 d 4 h');
    expect(await page.evaluate(() => window.plbFormat.duration(3 * 3600 + 5 * 60))).toBe('3 h 5 min');
    // The server's history endpoint the chart starts from: 10 s steps over 15 minutes.
    const history = (await (await fetch(`${proxy.adminUrl}/history`)).json()) as { stepSeconds: number; windowSeconds: number; points: unknown[] };
    expect({ step: history.stepSeconds, window: history.windowSeconds }).toEqual({ step: 10, window: 900 });
    session.socket.destroy();
    expect(consoleErrors).toEqual([]);
    await page.close();
  });
});
