import type { Socket } from 'node:net';

/**
 * Reads one `\n`-terminated line from a socket (the 4172/TCP tag protocol is one line each way).
 * Rejects when the peer closes first, sends more than `maxBytes` without a newline, or is
 * silent for `timeoutMs`. Bytes after the newline are pushed back so nothing is lost.
 */
export function readLine(socket: Socket, maxBytes: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const done = (err: Error | undefined, line?: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve(line!);
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) {
        if (buffered.length > maxBytes) done(new Error(`line longer than ${maxBytes} bytes`));
        return;
      }
      const rest = buffered.subarray(nl + 1);
      socket.pause();
      if (rest.length > 0) socket.unshift(rest);
      done(undefined, buffered.subarray(0, nl).toString('utf8').replace(/\r$/, ''));
    };
    const onClose = () => done(new Error(`connection closed before a full line (got ${JSON.stringify(buffered.toString('utf8').slice(0, 80))})`));
    const onError = (err: Error) => done(err);
    const timer = setTimeout(() => done(new Error(`no line within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
  });
}
