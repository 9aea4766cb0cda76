import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ErrorCodes, PlbError } from '../errors.ts';

/**
 * The pid file lets `pcoip-lb reload` find the running process (when no admin API is there to
 * ask). Written after the listeners are bound, removed on a clean exit.
 */
export function writePidFile(path: string, pid = process.pid): void {
  try {
    writeFileSync(path, `${pid}\n`);
  } catch (err) {
    throw new PlbError(ErrorCodes.PID_FILE, `pidFile: cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, [], { cause: err });
  }
}

/** Removes the pid file if it still names this process (a newer instance may have replaced it). */
export function removePidFile(path: string, pid = process.pid): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(pid)) rmSync(path);
  } catch {
    // already gone
  }
}

export function readPidFile(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PlbError(
      ErrorCodes.PID_FILE,
      `pidFile: cannot read ${path}: ${code === 'ENOENT' ? 'no such file (is pcoip-lb running with this config?)' : (code ?? String(err))}`,
      [],
      { cause: err },
    );
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1) throw new PlbError(ErrorCodes.PID_FILE, `pidFile: ${path} does not hold a process id ("${text.trim()}")`);
  return pid;
}
