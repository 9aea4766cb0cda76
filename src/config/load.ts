import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import type { z } from 'zod';
import { ErrorCodes, PlbError } from '../errors.ts';
import { configSchema, type Config } from './schema.ts';
import { configErrorMessage } from './messages.ts';
import { preflight, type ConfigWarning, type PreflightOptions } from './preflight.ts';

/** `connectors[1].address` from zod's `['connectors', 1, 'address']`. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(top level)' : out;
}

/** A config that passed the schema and every preflight check, with the warnings it still draws. */
export interface CheckedConfig {
  config: Config;
  /** `FILE:LINE:COL KEY.PATH: message (PLB_W_…)`, in line order. */
  warnings: string[];
  warningFindings: ConfigWarning[];
}

/**
 * Parses and validates config text. Every problem is reported, each as
 * `FILE:LINE:COL KEY.PATH: message`, in line order, so an operator can fix them all in one pass.
 */
export function parseConfigText(text: string, fileName: string): Config {
  return validate(text, fileName).config;
}

/** parseConfigText plus the checks start makes before binding (files read and parsed; see preflight.ts). */
export function checkConfigText(text: string, fileName: string, options: PreflightOptions = {}): CheckedConfig {
  const { config, locate } = validate(text, fileName);
  const { errors, warnings } = preflight(config, options);
  if (errors.length > 0) {
    const details = inLineOrder(errors.map((e) => locate(e.path, e.message)));
    throw new PlbError(ErrorCodes.CONFIG_INVALID, `${fileName}: ${details.length} config error${details.length === 1 ? '' : 's'}`, details);
  }
  return { config, warnings: inLineOrder(warnings.map((w) => locate(w.path, `${w.message} (${w.code})`))), warningFindings: warnings };
}

export function loadConfigFile(fileName: string): Config {
  return parseConfigText(readConfigFile(fileName), fileName);
}

/** What `start`, `check-config` and a reload use: the file, validated and preflighted. */
export function loadCheckedConfigFile(fileName: string, options: PreflightOptions = {}): CheckedConfig {
  return checkConfigText(readConfigFile(fileName), fileName, options);
}

function readConfigFile(fileName: string): string {
  try {
    return readFileSync(fileName, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new PlbError(ErrorCodes.CONFIG_READ, `${fileName}: cannot read config: ${reason}`, [], { cause: err });
  }
}

interface Located {
  line: number;
  col: number;
  text: string;
}

function validate(text: string, fileName: string): { config: Config; locate: (path: readonly PropertyKey[], message: string) => Located } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const details = doc.errors.map((e) => {
      const pos = e.pos ? lineCounter.linePos(e.pos[0]) : undefined;
      return `${fileName}${pos ? `:${pos.line}:${pos.col}` : ''} ${e.message.split('\n')[0]}`;
    });
    throw new PlbError(ErrorCodes.CONFIG_PARSE, `${fileName}: not valid YAML`, details);
  }
  const locate = (path: readonly PropertyKey[], message: string): Located => {
    const pos = position(doc, lineCounter, path);
    return { ...pos, text: `${fileName}${pos.line > 0 ? `:${pos.line}:${pos.col}` : ''} ${formatKeyPath(path)}: ${message}` };
  };
  const raw: unknown = doc.toJS() ?? {};
  const result = configSchema.safeParse(raw, { error: configErrorMessage });
  if (!result.success) {
    const details = inLineOrder(result.error.issues.flatMap((issue) => describeIssue(issue, locate)));
    throw new PlbError(ErrorCodes.CONFIG_INVALID, `${fileName}: ${details.length} config error${details.length === 1 ? '' : 's'}`, details);
  }
  return { config: result.data, locate };
}

/** Errors in the order of the file's lines (zod reports them in schema order). Stable for equal positions. */
function inLineOrder(items: Located[]): string[] {
  return [...items].sort((a, b) => a.line - b.line || a.col - b.col).map((i) => i.text);
}

function describeIssue(issue: z.core.$ZodIssue, locate: (path: readonly PropertyKey[], message: string) => Located): Located[] {
  // Unknown keys are reported on their parent object; name each key so the line points at it.
  if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => locate([...issue.path, key], 'unknown key'));
  return [locate(issue.path, issue.message)];
}

/** Line and column of the deepest node that exists along the path (a missing key points at its parent); 0 when none. */
function position(doc: Document, lineCounter: LineCounter, path: readonly PropertyKey[]): { line: number; col: number } {
  for (let depth = path.length; depth >= 0; depth--) {
    const keys = path.slice(0, depth) as (string | number)[];
    const node = depth === 0 ? doc.contents : doc.getIn(keys, true);
    if (isNode(node) && node.range) return lineCounter.linePos(keyStart(doc, keys) ?? node.range[0]);
  }
  return { line: 0, col: 0 };
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
