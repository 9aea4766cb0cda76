/**
 * Entry point of the health-check thread (see check-thread.ts): runs each requested round with
 * the ordinary checks and posts the result back. Nothing else lives here.
 */
import { parentPort } from 'node:worker_threads';
import { runRound, type CheckOptions, type CheckTarget } from './checks.ts';

export interface RoundRequest {
  id: number;
  target: CheckTarget;
  options: CheckOptions;
}

if (!parentPort) throw new Error('check-worker runs as a worker thread');
const port = parentPort;
port.on('message', (req: RoundRequest) => {
  void runRound(req.target, req.options).then((result) => port.postMessage({ id: req.id, result }));
});
