/**
 * The background load of bench:latency, in its own process: `flows` UDP flows (one socket,
 * i.e. one source port, each) through the path under test, either sending client → Connector
 * datagrams at `rate` in total (paced by timers: bench/lib/pacer.ts) or asking the Connector to
 * stream Connector → client at that rate and counting what arrives.
 *
 *   fork('bench/lib/latency-load.ts')
 * IPC: { type: 'start', host, port, rate, flows, direction: 'up' | 'down', firstId, durationMs } → { type: 'started' }
 *      { type: 'stop' } → { type: 'stopped', sent: [id, n][], received: [id, n][], forgiven }
 */
import { createSocket, type Socket } from 'node:dgram';
import { pace, type Pacer } from './pacer.ts';
import { DURATION_OFFSET, KIND_DOWN, KIND_DOWN_START, KIND_DOWN_STOP, KIND_OFFSET, KIND_UP, RATE_OFFSET, SEQ_OFFSET, datagram } from './latency-wire.ts';

if (!process.send) throw new Error('usage: fork(latency-load.ts) with an IPC channel');
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

interface StartRequest {
  type: 'start';
  host: string;
  port: number;
  rate: number;
  flows: number;
  direction: 'up' | 'down';
  firstId: number;
  durationMs: number;
}

interface Flow {
  id: number;
  socket: Socket;
  pacer: Pacer | undefined;
  received: number;
}

let running: { request: StartRequest; flows: Flow[] } | undefined;

async function openFlow(id: number, host: string, port: number): Promise<Flow> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
  const flow: Flow = { id, socket, pacer: undefined, received: 0 };
  socket.on('message', (msg) => {
    if (msg[KIND_OFFSET] === KIND_DOWN) flow.received++;
  });
  socket.on('error', () => undefined); // ICMP from a path that is not there yet: the counts tell
  await new Promise<void>((resolve) => socket.connect(port, host, resolve));
  return flow;
}

async function start(request: StartRequest): Promise<void> {
  const flows = await Promise.all(Array.from({ length: request.flows }, (_, i) => openFlow(request.firstId + i, request.host, request.port)));
  running = { request, flows };
  const perFlow = request.rate / request.flows;
  if (request.direction === 'up') {
    for (const flow of flows) {
      const out = datagram(KIND_UP, flow.id);
      let seq = 0;
      flow.pacer = pace(
        perFlow,
        () => {
          out.writeUInt32BE(seq++, SEQ_OFFSET);
          flow.socket.send(out);
        },
        { durationMs: request.durationMs },
      );
    }
    return;
  }
  // Connector → client: ask for the stream until its first datagram arrives (the first request
  // also opens the flow through the proxy).
  for (const flow of flows) {
    const ask = datagram(KIND_DOWN_START, flow.id);
    ask.writeUInt32BE(Math.round(perFlow), RATE_OFFSET);
    ask.writeUInt32BE(request.durationMs, DURATION_OFFSET);
    for (let attempt = 0; attempt < 20 && flow.received === 0; attempt++) {
      flow.socket.send(ask);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function stop(): Promise<void> {
  const current = running;
  running = undefined;
  if (!current) return void process.send!({ type: 'stopped', sent: [], received: [], forgiven: 0 });
  for (const flow of current.flows) {
    flow.pacer?.stop();
    if (current.request.direction === 'down') {
      const bye = datagram(KIND_DOWN_STOP, flow.id);
      for (let i = 0; i < 3; i++) flow.socket.send(bye);
    }
  }
  // Let the last datagrams in flight arrive before counting.
  await new Promise((r) => setTimeout(r, 300));
  for (const flow of current.flows) flow.socket.close();
  process.send!({
    type: 'stopped',
    sent: current.flows.map((f) => [f.id, f.pacer?.sent ?? 0]),
    received: current.flows.map((f) => [f.id, f.received]),
    forgiven: current.flows.reduce((n, f) => n + (f.pacer?.forgiven ?? 0), 0),
  });
}

process.on('message', (raw) => {
  const msg = raw as StartRequest | { type: 'stop' };
  if (msg.type === 'start') void start(msg).then(() => process.send!({ type: 'started' }));
  else if (msg.type === 'stop') void stop();
});
process.on('disconnect', () => process.exit(0));
