/** Entry point of a multi-core worker process (forked by the primary; see primary.ts). */
import { runWorker } from './worker.ts';

runWorker();
