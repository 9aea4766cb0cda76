import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import type { z } from 'zod';
import { ErrorCodes, PlbError } from '../errors.ts';
import { configSchema, type Config } from './schema.ts';

/** `connectors[1].address` from zod's `['connectors', 1, 'address']`. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(top level)' : out;
}

/**
 * Parses and validates config text. Every problem is reported, each as
 * `FILE:LINE:COL KEY.PATH: message`, so an operator can fix them all in one pass.
 */
export function parseConfigText(text: string, fileName: string): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const details = doc.errors.map((e) => {
      const pos = e.pos ? lineCounter.linePos(e.pos[0]) : undefined;
      return `${fileName}${pos ? `:${pos.line}:${pos.col}` : ''} ${e.message.split('\n')[0]}`;
    });
    throw new PlbError(ErrorCodes.CONFIG_PARSE, `${fileName}: not valid YAML`, details);
  }
  const raw: unknown = doc.toJS() ?? {};
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const details = result.error.issues.flatMap((issue) => describeIssue(issue, doc, lineCounter, fileName));
    throw new PlbError(ErrorCodes.CONFIG_INVALID, `${fileName}: ${details.length} config error${details.length === 1 ? '' : 's'}`, details);
  }
  return result.data;
}

export function loadConfigFile(fileName: string): Config {
  let text: string;
  try {
    text = readFileSync(fileName, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new PlbError(ErrorCodes.CONFIG_READ, `${fileName}: cannot read config: ${reason}`, [], { cause: err });
  }
  return parseConfigText(text, fileName);
}

function describeIssue(issue: z.core.$ZodIssue, doc: Document, lineCounter: LineCounter, fileName: string): string[] {
  // Unknown keys are reported on their parent object; name each key so the line points at it.
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const path = [...issue.path, key];
      return `${where(doc, lineCounter, fileName, path)} ${formatKeyPath(path)}: unknown key`;
    });
  }
  return [`${where(doc, lineCounter, fileName, issue.path)} ${formatKeyPath(issue.path)}: ${issue.message}`];
}

/** `file:line:col` of the deepest node that exists along the path (a missing key points at its parent). */
function where(doc: Document, lineCounter: LineCounter, fileName: string, path: readonly PropertyKey[]): string {
  for (let depth = path.length; depth >= 0; depth--) {
    const keys = path.slice(0, depth) as (string | number)[];
    const node = depth === 0 ? doc.contents : doc.getIn(keys, true);
    if (isNode(node) && node.range) {
      const pos = lineCounter.linePos(keyStart(doc, keys) ?? node.range[0]);
      return `${fileName}:${pos.line}:${pos.col}`;
    }
  }
  return fileName;
}

/** Points at the key itself (`address:`) rather than its value when the path ends in a map key. */
function keyStart(doc: Document, keys: (string | number)[]): number | undefined {
  if (keys.length === 0) return undefined;
  const parent = keys.length === 1 ? doc.contents : doc.getIn(keys.slice(0, -1), true);
  const last = keys[keys.length - 1];
  if (parent && typeof parent === 'object' && 'items' in parent && Array.isArray(parent.items) && typeof last === 'string') {
    for (const item of parent.items as unknown[]) {
      const key = (item as { key?: unknown }).key;
      if (isNode(key) && (key as { value?: unknown }).value === last && key.range) return key.range[0];
    }
  }
  return undefined;
}
