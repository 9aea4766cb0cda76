/**
 * The latency probe of bench:latency, in its own process so that nothing else runs on its event
 * loop: one UDP flow sending `rate` probes a second (1200 bytes, each with its send time) for
 * `durationMs`, then waiting `graceMs` for the last echoes. Per echoed probe it keeps the round
 * trip and both one-way delays (the Connector stamps its receive time; CLOCK_MONOTONIC is
 * shared by the processes of one machine), in ms.
 *
 *   fork('bench/lib/latency-probe.ts')
 * IPC: { type: 'probe', host, port, rate, durationMs, graceMs } → { type: 'probed', sent, rtt, up, down }
 */
import { createSocket } from 'node:dgram';
import { pace } from './pacer.ts';
import { CONNECTOR_AT_OFFSET, KIND_OFFSET, KIND_PROBE, SENT_AT_OFFSET, SEQ_OFFSET, datagram } from './latency-wire.ts';

if (!process.send) throw new Error('usage: fork(latency-probe.ts) with an IPC channel');

interface ProbeRequest {
  type: 'probe';
  host: string;
  port: number;
  rate: number;
  durationMs: number;
  graceMs: number;
}

async function probe(request: ProbeRequest): Promise<void> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  const rtt: number[] = [];
  const up: number[] = [];
  const down: number[] = [];
  const seen = new Set<number>();
  socket.on('message', (msg) => {
    const now = process.hrtime.bigint();
    if (msg[KIND_OFFSET] !== KIND_PROBE) return;
    const seq = msg.readUInt32BE(SEQ_OFFSET);
    if (seen.has(seq)) return;
    seen.add(seq);
    const sentAt = msg.readBigInt64BE(SENT_AT_OFFSET);
    const atConnector = msg.readBigInt64BE(CONNECTOR_AT_OFFSET);
    rtt.push(Number(now - sentAt) / 1e6);
    up.push(Number(atConnector - sentAt) / 1e6);
    down.push(Number(now - atConnector) / 1e6);
  });
  socket.on('error', () => undefined); // lost probes are counted, not thrown
  await new Promise<void>((resolve) => socket.connect(request.port, request.host, resolve));
  let seq = 0;
  const pacer = pace(
    request.rate,
    () => {
      // A fresh buffer per probe: a send that the kernel queues must not see the next probe's stamp.
      const out = datagram(KIND_PROBE, 0);
      out.writeUInt32BE(seq++, SEQ_OFFSET);
      out.writeBigInt64BE(process.hrtime.bigint(), SENT_AT_OFFSET);
      socket.send(out);
    },
    { durationMs: request.durationMs },
  );
  await new Promise((r) => setTimeout(r, request.durationMs + request.graceMs));
  pacer.stop();
  socket.close();
  process.send!({ type: 'probed', sent: pacer.sent, rtt, up, down });
}

process.on('message', (raw) => {
  const msg = raw as ProbeRequest;
  if (msg.type === 'probe') void probe(msg);
});
process.on('disconnect', () => process.exit(0));
