// Types for @cofferdam/guest: write cofferdam tools in JavaScript or TypeScript.
// The input type of `run` is inferred from the `s` schema; see README.md.

/** JSON, as the tool receives and returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON Schema object, as the builder emits it. */
export type JsonSchema = { [key: string]: Json };

/** Whether an object field may be absent: `required`, `optional` (absent stays absent) or `defaulted` (absent is filled in). */
export type Presence = 'required' | 'optional' | 'defaulted';

/** One node of a schema; `T` is the parsed value's type. Immutable: every method returns a new node. */
export declare class Schema<T, P extends Presence = 'required'> {
  private constructor();
  /** Type-level only: the parsed value's type. */
  readonly __type?: T;
  /** Type-level only: whether an object field may be absent. */
  readonly __presence?: P;
  /** Sets the description shown to models (JSON Schema `description`). */
  describe(text: string): Schema<T, P>;
  /** The value used when the field is absent; makes the field optional in the input, present in `run`'s. */
  default(value: T): Schema<T, 'defaulted'>;
  /** Marks an object field as optional (it may be absent). */
  optional(): Schema<T, 'optional'>;
  /** Lower bound: value for numbers, length in characters for strings, items for arrays. */
  min(n: number): Schema<T, P>;
  /** Upper bound: value for numbers, length in characters for strings, items for arrays. */
  max(n: number): Schema<T, P>;
  /** A regular expression the string must match (no flags); strings only. */
  pattern(regex: RegExp | string): Schema<T, P>;
  /** The JSON Schema; throws `SchemaDefinitionError` for a definition the builder cannot express. */
  toJSONSchema(): JsonSchema;
  /** Checks a value and returns it with defaults filled in; throws `InvalidInput` listing every mismatch. */
  parse(value: unknown): T;
}

/** The parsed type of a schema. */
export type Infer<S> = S extends Schema<infer T, any> ? T : never;

/** The fields of an `s.object({...})`. */
export type Shape = { [field: string]: Schema<any, Presence> };

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** The parsed type of an object shape: optional fields may be absent, defaulted ones are always present. */
export type InferShape<S extends Shape> = Simplify<
  { [K in keyof S as S[K] extends Schema<any, 'optional'> ? never : K]: Infer<S[K]> } & {
    [K in keyof S as S[K] extends Schema<any, 'optional'> ? K : never]?: Infer<S[K]>;
  }
>;

/** The schema builder. */
export declare const s: {
  string(): Schema<string>;
  integer(): Schema<number>;
  number(): Schema<number>;
  boolean(): Schema<boolean>;
  /** Any JSON value, not checked. */
  any(): Schema<Json>;
  array<I>(item: Schema<I, 'required'>): Schema<I[]>;
  record<V>(value: Schema<V, 'required'>): Schema<{ [key: string]: V }>;
  enum<const V extends readonly (string | number | boolean)[]>(values: V): Schema<V[number]>;
  optional<T>(schema: Schema<T, Presence>): Schema<T, 'optional'>;
  object<S extends Shape>(shape: S): Schema<InferShape<S>>;
  /** Not supported: fails the build naming the field. */
  union(...options: Schema<any, Presence>[]): Schema<never>;
};

/** Whether `value` was made by the builder. */
export declare function isSchema(value: unknown): value is Schema<unknown, Presence>;

/** A definition the builder cannot express; thrown when the tool is built. */
export declare class SchemaDefinitionError extends Error {
  /** Where in the definition: field names and `[]` for array items. */
  readonly path: (string | number)[];
}

/** A tool definition that cannot be built (bad name, missing `run`, …). */
export declare class ToolDefinitionError extends Error {}

/** What calling a tool does to the world; the host retries and journals by it. */
export declare const Effect: {
  readonly PURE: 'pure';
  readonly IDEMPOTENT: 'idempotent';
  readonly SIDE_EFFECTING: 'side-effecting';
};
export type Effect = (typeof Effect)[keyof typeof Effect];

/** Severity of a log record. */
export declare const Level: {
  readonly TRACE: 'trace';
  readonly DEBUG: 'debug';
  readonly INFO: 'info';
  readonly WARN: 'warn';
  readonly ERROR: 'error';
};
export type Level = (typeof Level)[keyof typeof Level];

/** Base class of the errors a tool reports; the class tells the host what to do next. */
export declare class ToolError extends Error {
  readonly kind: 'invalid-input' | 'transient' | 'rate-limited' | 'permanent';
}
/** The caller's input is wrong; never retried. */
export declare class InvalidInput extends ToolError {
  constructor(message: string);
  readonly kind: 'invalid-input';
}
/** A temporary failure; a retry may succeed. */
export declare class Transient extends ToolError {
  constructor(message: string);
  readonly kind: 'transient';
}
/** Upstream asked to slow down: retry after `retryAfterMs`. */
export declare class RateLimited extends ToolError {
  constructor(retryAfterMs: number, message?: string);
  readonly kind: 'rate-limited';
  readonly retryAfterMs: number;
}
/** A failure that a retry will not fix. */
export declare class Permanent extends ToolError {
  constructor(message: string);
  readonly kind: 'permanent';
}

/** The tool's durable key-value state, over `wasi:keyvalue`; values are JSON. */
export declare class State {
  get<T = Json>(key: string): T | undefined;
  set(key: string, value: unknown): void;
  delete(key: string): void;
  increment(key: string, delta?: number | bigint): number;
  keys(): string[];
}

/** The call in progress: its identity, and the host services a tool may use. */
export declare class Context {
  readonly callId: string;
  readonly taskId: string | null;
  readonly attempt: number;
  readonly deadlineMs: number;
  log(level: Level, message: string): void;
  logTrace(message: string): void;
  logDebug(message: string): void;
  logInfo(message: string): void;
  logWarn(message: string): void;
  logError(message: string): void;
  progress(done: number, total: number | null | undefined, message?: string): void;
  remainingBudget(): number;
  state(): State;
}

/** What `tool()` takes. */
export interface ToolDefinition<I, O> {
  /** 1 to 64 characters of a-z, 0-9, _ and -. */
  name: string;
  /** Semver, such as "0.1.0". */
  version: string;
  /** One or two sentences for a model deciding whether to call it. */
  description: string;
  /** `Effect.PURE` unless given. */
  effect?: Effect;
  /** The input: always `s.object({...})`. */
  input: Schema<I, 'required'>;
  /** Runs the tool; throw a `ToolError` subclass to fail with its case. */
  run(input: I, ctx: Context): O | Promise<O>;
}

/** A built tool definition; export it as the module's default. */
export interface Tool<I = unknown> {
  readonly name: string;
  readonly version: string;
  readonly description: string;
  readonly effect: Effect;
  readonly inputSchema: string;
  readonly input: Schema<I>;
  readonly run: (input: I, ctx: Context) => unknown;
}

/** Defines a tool; `run`'s input type is inferred from `input`. */
export declare function tool<I, O>(definition: ToolDefinition<I, O>): Tool<I>;

/** Whether `value` was made by `tool()`. */
export declare function isTool(value: unknown): value is Tool;

/** HTTP over the global `fetch`, with failures and statuses mapped to tool errors. */
export declare namespace http {
  /** `fetch`; a request without a response is `Permanent` (refused, bad URL) or `Transient` (unreachable). */
  function send(url: string | URL, init?: RequestInit): Promise<Response>;
  /** Returns a 2xx/3xx response; else throws: 429 RateLimited, 408/502/503/504 Transient, 400/404/422 InvalidInput, other Permanent. */
  function errorForStatus(response: Response): Response;
  /** The body as JSON; a body that does not parse is `Permanent`. */
  function readJson<T = Json>(response: Response): Promise<T>;
  /** Classifies what `fetch` threw. */
  function fetchError(url: string, thrown: unknown): ToolError;
}
