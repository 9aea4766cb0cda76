/** Runs iperf3 (server as the "Connector", client as the traffic source) and reads its JSON. */
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { CONNECTOR_HOST } from './peers.ts';

/** UDP sockets of iperf3's two ends get 4 MB buffers so that loss is the proxy's, not iperf3's. */
const UDP_SOCKET_BUFFER = '4M';

/**
 * Starts a one-test iperf3 server on 127.0.1.1:port and resolves once it listens. A fresh server
 * per test means a test that went wrong cannot leave state behind for the next one.
 */
export async function startIperfServer(port: number): Promise<{ done: Promise<void>; kill: () => void }> {
  const child = spawn('iperf3', ['-s', '-1', '-B', CONNECTOR_HOST, '-p', String(port), '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`iperf3 server did not start: ${out}`)), 5000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', () => reject(new Error(`iperf3 server exited: ${out}`)));
  });
  const done = once(child, 'exit').then(() => undefined);
  return { done, kill: () => child.kill('SIGKILL') };
}

export interface TcpResult {
  bitsPerSecond: number;
  bytes: number;
  seconds: number;
  retransmits: number | undefined;
}

export interface UdpResult {
  offeredBitsPerSecond: number;
  sentBitsPerSecond: number;
  /** Bits per second that reached the server. */
  deliveredBitsPerSecond: number;
  packetsSent: number;
  packetsLost: number;
  lostPercent: number;
  seconds: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum?: { seconds: number; bytes: number; bits_per_second: number; lost_packets?: number; packets?: number; lost_percent?: number };
    sum_sent?: { seconds: number; bytes: number; bits_per_second: number; retransmits?: number };
    sum_received?: { seconds: number; bytes: number; bits_per_second: number };
  };
}

function runClient(args: string[], seconds: number): Promise<IperfJson> {
  return new Promise((resolve, reject) => {
    execFile('iperf3', [...args, '-J', '--connect-timeout', '3000'], { timeout: (seconds + 12) * 1000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      let json: IperfJson | undefined;
      try {
        json = JSON.parse(stdout) as IperfJson;
      } catch {
        // iperf3 printed no JSON: report the process error instead
      }
      if (json?.error) return reject(new Error(`iperf3: ${json.error}`));
      if (!json) return reject(new Error(`iperf3 printed no JSON (${err?.killed ? 'killed after timeout' : `exit ${err?.code ?? 0}`}): ${(stderr || stdout).trim().slice(0, 300)}`));
      resolve(json);
    });
  });
}

/** One TCP test through host:port with `streams` parallel streams. */
export async function iperfTcp(host: string, port: number, serverPort: number, seconds: number, streams: number): Promise<TcpResult> {
  const server = await startIperfServer(serverPort);
  try {
    const json = await runClient(['-c', host, '-p', String(port), '-t', String(seconds), '-P', String(streams)], seconds);
    const received = json.end?.sum_received;
    if (!received) throw new Error('iperf3 JSON has no end.sum_received');
    return { bitsPerSecond: received.bits_per_second, bytes: received.bytes, seconds: received.seconds, retransmits: json.end?.sum_sent?.retransmits };
  } finally {
    server.kill();
    await server.done;
  }
}

/**
 * One UDP test: 1200-byte datagrams offered at `bitsPerSecond` through host:port, client → server,
 * or server → client with `reverse` (the Connector → client direction that carries PCoIP's display).
 * `streams` > 1 splits the rate over that many flows (client source ports), as many clients would.
 */
export async function iperfUdp(host: string, port: number, serverPort: number, seconds: number, bitsPerSecond: number, reverse = false, streams = 1): Promise<UdpResult> {
  const server = await startIperfServer(serverPort);
  try {
    const json = await runClient(
      [
        ...['-c', host, '-p', String(port), '-u', '-l', '1200', '-w', UDP_SOCKET_BUFFER, '-b', String(Math.round(bitsPerSecond / streams)), '-t', String(seconds)],
        ...(reverse ? ['-R'] : []),
        ...(streams > 1 ? ['-P', String(streams)] : []),
      ],
      seconds,
    );
    const sum = json.end?.sum;
    const sent = json.end?.sum_sent;
    if (!sum || sum.packets === undefined || sum.lost_packets === undefined) throw new Error('iperf3 JSON has no UDP end.sum');
    const delivered = sum.packets - sum.lost_packets;
    return {
      offeredBitsPerSecond: bitsPerSecond,
      sentBitsPerSecond: sent?.bits_per_second ?? sum.bits_per_second,
      deliveredBitsPerSecond: (delivered * 1200 * 8) / sum.seconds,
      packetsSent: sum.packets,
      packetsLost: sum.lost_packets,
      lostPercent: sum.lost_percent ?? (100 * sum.lost_packets) / Math.max(1, sum.packets),
      seconds: sum.seconds,
    };
  } finally {
    server.kill();
    await server.done;
  }
}
