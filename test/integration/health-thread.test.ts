import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { testCertificate } from '../helpers/https-connector.ts';
import { CheckThread } from '../../src/health/check-thread.ts';
import { createLogger } from '../../src/logger.ts';

/**
 * Health checks run on a thread of their own (src/health/check-thread.ts), so a TLS handshake
 * never blocks the event loop that, with workers: 1, also forwards the UDP media. Proven
 * behaviourally: while the main loop is blocked for 400 ms, a full HTTPS check (against a
 * server on yet another thread) starts and finishes.
 */
const HOST = '127.0.1.113';
const SERVER = `
const { parentPort, workerData } = require('node:worker_threads');
const https = require('node:https');
const server = https.createServer({ key: workerData.key, cert: workerData.cert }, (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"code":200,"status":"success"}');
});
server.listen(0, workerData.host, () => parentPort.postMessage(server.address().port));
`;

describe('health checks on their own thread', () => {
  let server: Worker;
  let port: number;
  beforeAll(async () => {
    const { key, cert } = testCertificate();
    server = new Worker(SERVER, { eval: true, workerData: { key, cert, host: HOST } });
    port = await new Promise<number>((resolve) => server.once('message', resolve));
  });
  afterAll(() => server.terminate());

  it('a broker check completes while the main event loop is blocked', async () => {
    const checks = new CheckThread(createLogger('silent'));
    const target = { address: HOST, ports: { broker: port, pcoip: port } };
    const options = { checks: ['broker' as const], timeoutMs: 5000, brokerPath: '/health', ca: undefined };
    try {
      // Warm the thread up (start-up, module loading) so the measured round is a plain check.
      expect((await checks.run(target, options)).ok).toBe(true);
      const round = checks.run(target, options);
      const blockedUntil = performance.now() + 400;
      while (performance.now() < blockedUntil) {
        // the main loop is busy (as it is with a burst of datagrams)
      }
      const result = await round;
      expect(result.ok).toBe(true);
      // Timed inside the thread: the handshake and the request finished during the block, not after it.
      expect(result.results[0]!.latencyMs).toBeLessThan(400);
    } finally {
      checks.close();
    }
  });
});
