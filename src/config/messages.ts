import type { z } from 'zod';

/**
 * Operator-facing wording for zod's built-in checks, passed to every config parse. zod's own
 * messages ("Too small: expected number to be >=1", "Invalid input: expected number, received
 * string") name types rather than config values; these say what the key accepts and what it got.
 * Messages set in the schema itself (durations, addresses, `workers`, …) take precedence.
 */
export const configErrorMessage: z.core.$ZodErrorMap = (issue) => {
  const got = describeInput(issue.input);
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'required';
      return `must be ${TYPE_NAMES[issue.expected] ?? issue.expected}; got ${got}`;
    case 'too_small':
      if (issue.origin === 'array') return `list at least ${issue.minimum} item${Number(issue.minimum) === 1 ? '' : 's'}`;
      if (issue.origin === 'string') return Number(issue.minimum) <= 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters`;
      return `must be ${issue.inclusive === false ? 'greater than' : 'at least'} ${issue.minimum}; got ${got}`;
    case 'too_big':
      if (issue.origin === 'array') return `list at most ${issue.maximum} items`;
      if (issue.origin === 'string') return `must be at most ${issue.maximum} characters`;
      return `must be ${issue.inclusive === false ? 'less than' : 'at most'} ${issue.maximum}; got ${got}`;
    case 'invalid_value':
      return issue.values.length === 1 ? `must be ${JSON.stringify(issue.values[0])}; got ${got}` : `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}; got ${got}`;
    case 'invalid_format':
      return `has the wrong form; got ${got}`;
    case 'not_multiple_of':
      return `must be a multiple of ${issue.divisor}; got ${got}`;
    case 'invalid_union':
      return `is none of the accepted forms; got ${got}`;
    case 'invalid_key':
      return `has a key that is not allowed; got ${got}`;
    case 'invalid_element':
      return `has a value that is not allowed; got ${got}`;
    default:
      return undefined;
  }
};

const TYPE_NAMES: Record<string, string> = {
  number: 'a number',
  int: 'a whole number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping (key: value lines or { … })',
  array: 'a list (- item lines or [ … ])',
  record: 'a mapping (key: value lines or { … })',
};

function describeInput(input: unknown): string {
  if (input === null) return 'null (an empty value)';
  if (Array.isArray(input)) return 'a list';
  if (typeof input === 'object') return 'a mapping';
  if (typeof input === 'string') return JSON.stringify(input.length > 60 ? `${input.slice(0, 57)}...` : input);
  return String(input);
}
