import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasChromium, launchChromium, warnIfNoChromium } from '../helpers/chromium.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { sendStream, startEspConnector, startLossyRelay, type EspConnector, type LossyRelay } from '../helpers/esp-peers.ts';

/**
 * The live page's sessions table in a real headless Chromium (as status-page.test.ts; skips only
 * where /usr/bin/chromium is missing): two UDP sessions, one behind a relay that drops every 10th
 * client datagram, shown worst first; a click on a header sorts by that column.
 */
warnIfNoChromium('sessions-page');

describe.skipIf(!hasChromium)('sessions table on the live page, in headless Chromium', () => {
  let esp: EspConnector;
  let relay: LossyRelay;
  let proxy: TestProxy;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  const closers: Array<() => void> = [];

  beforeAll(async () => {
    esp = await startEspConnector('127.15.0.11', 0xc0de0011);
    proxy = await startTestProxy(testConfig([{ id: 'esp', address: esp.host, ports: { broker: 443, pcoip: esp.port } }] as never, { listeners: { pcoipUdp: { bind: '127.0.0.1:0' } } }));
    relay = await startLossyRelay('127.15.0.12', { host: '127.0.0.1', port: proxy.addresses.pcoipUdp.port }, 'forward', 10);
    const numbered = (spi: number) => Array.from({ length: 105 }, (_, i) => ({ spi, seq: i + 1 }));
    const clean = await sendStream('127.15.1.7', { host: '127.0.0.1', port: proxy.addresses.pcoipUdp.port }, numbered(0xc11e0011));
    const lossy = await sendStream('127.15.1.8', relay, numbered(0xc11e0012));
    closers.push(clean.close, lossy.close, relay.close, esp.close);
    browser = await launchChromium({ width: 1400, height: 800 }, 'plb15-chromium-');
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.stop();
    for (const c of closers) c();
  });

  it('lists the sessions worst quality first, flags the loss, and sorts on a click', async () => {
    const page = await browser!.context.newPage();
    const consoleErrors: string[] = [];
    page.on('console', (msg) => (msg.type() === 'error' ? consoleErrors.push(msg.text()) : undefined));
    await page.goto(`${proxy.adminUrl}/`);
    await page.waitForFunction("document.querySelectorAll('#session-rows tr[data-session]').length === 2", undefined, { timeout: 10_000 });
    const column = (field: string) => page.$$eval(`#session-rows tr [data-field="${field}"]`, (cells) => cells.map((c) => c.textContent));
    // The relay is the lossy session's client as the proxy sees it; 10 of 102 tracked datagrams lost (3 decide the layout).
    expect(await column('client')).toEqual(['127.15.0.12', '127.15.1.7']);
    expect(await column('loss-in')).toEqual(['9.8 %', '0.00 %']);
    expect(await column('loss-out')).toEqual(['0.00 %', '0.00 %']);
    expect(await column('state')).toEqual(['streaming', 'streaming']);
    expect(await page.getAttribute('#session-rows tr:first-child [data-field="loss-in"]', 'class')).toContain('bad');
    expect(await page.textContent('#sessions-count')).toContain('2 in all');

    // Text sorts A to Z first, numbers highest first; a second click reverses.
    await page.click('#sessions th[data-sort="client"]');
    expect(await column('client')).toEqual(['127.15.0.12', '127.15.1.7']);
    await page.click('#sessions th[data-sort="client"]');
    expect(await column('client')).toEqual(['127.15.1.7', '127.15.0.12']);
    await page.click('#sessions th[data-sort="lossIn"]');
    expect(await column('loss-in')).toEqual(['9.8 %', '0.00 %']);
    const shot = join(tmpdir(), 'pcoip-lb-sessions-table.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.info(`sessions table screenshot: ${shot}`);
    expect(consoleErrors).toEqual([]);
  });
});
