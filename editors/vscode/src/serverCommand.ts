// Which process to start as the language server.
//
// Pure apart from the injected `isExecutable`, so the unit tests run on plain Node.

import * as path from 'node:path';

/** The console script that installing the server package puts on PATH. */
export const DEFAULT_EXECUTABLE = 'codegeex2-lsp';

export interface LaunchSettings {
  /** `codegeex2.serverCommand`: argv of the server; a plain string is taken as the program. */
  serverCommand?: readonly string[] | string | undefined;
  /** `codegeex2.pythonPath`: an interpreter to run `-m codegeex2_lsp` with. */
  pythonPath?: string | undefined;
  /** `codegeex2.serverEnv`: variables added to the server's environment. */
  serverEnv?: Readonly<Record<string, unknown>> | undefined;
}

export interface ResolveContext {
  /** The extension host's environment; PATH is searched in it. */
  env: Readonly<Record<string, string | undefined>>;
  platform: NodeJS.Platform;
  homeDir: string;
  /** The first workspace folder, for `${workspaceFolder}`; undefined when none is open. */
  workspaceFolder?: string | undefined;
  /** True when the path names a file this user may execute. */
  isExecutable(file: string): boolean;
}

export interface ServerLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
  /** Where the command came from, for the log. */
  source: 'serverCommand' | 'pythonPath' | 'PATH';
}

export type Resolution = { ok: true; launch: ServerLaunch } | { ok: false; message: string };

/**
 * `codegeex2.serverCommand` wins, then `codegeex2.pythonPath`, then `codegeex2-lsp` on PATH.
 * The order follows how specific each setting is: a full command line says everything.
 */
export function resolveServerCommand(settings: LaunchSettings, ctx: ResolveContext): Resolution {
  const env = mergeEnv(ctx.env, settings.serverEnv, ctx);

  const argv = commandArgv(settings.serverCommand).map((arg) => expand(arg, ctx));
  const [program, ...args] = argv;
  if (program !== undefined) {
    return { ok: true, launch: { command: program, args, env, source: 'serverCommand' } };
  }

  const python = (settings.pythonPath ?? '').trim();
  if (python !== '') {
    return {
      ok: true,
      launch: { command: expand(python, ctx), args: ['-m', 'codegeex2_lsp'], env, source: 'pythonPath' },
    };
  }

  const found = findOnPath(DEFAULT_EXECUTABLE, env, ctx);
  if (found !== undefined) {
    return { ok: true, launch: { command: found, args: [], env, source: 'PATH' } };
  }
  return {
    ok: false,
    message:
      `'${DEFAULT_EXECUTABLE}' was not found on PATH. Install the server (pip install /path/to/codegeex2-lsp) ` +
      `or set 'codegeex2.serverCommand' or 'codegeex2.pythonPath'.`,
  };
}

function commandArgv(value: LaunchSettings['serverCommand']): string[] {
  if (typeof value === 'string') {
    // A string is one program path, which may contain spaces; arguments need the array form.
    return value.trim() === '' ? [] : [value.trim()];
  }
  if (!Array.isArray(value)) {
    return [];
  }
  const argv = value.filter((arg): arg is string => typeof arg === 'string');
  // An empty first element would make spawn fail with an unhelpful error; treat it as unset.
  return argv.length > 0 && argv[0]!.trim() !== '' ? argv : [];
}

/** `~`, `${userHome}`, `${workspaceFolder}` and `${env:NAME}`, the variables users expect. */
export function expand(value: string, ctx: Pick<ResolveContext, 'env' | 'homeDir' | 'workspaceFolder'>): string {
  let result = value.replace(/\$\{(userHome|workspaceFolder|env:([A-Za-z_][A-Za-z0-9_]*))\}/g, (whole, name: string, envName?: string) => {
    if (name === 'userHome') {
      return ctx.homeDir;
    }
    if (name === 'workspaceFolder') {
      return ctx.workspaceFolder ?? whole;
    }
    return ctx.env[envName ?? ''] ?? '';
  });
  if (result === '~' || result.startsWith('~/')) {
    result = ctx.homeDir + result.slice(1);
  }
  return result;
}

function mergeEnv(
  base: Readonly<Record<string, string | undefined>>,
  extra: LaunchSettings['serverEnv'],
  ctx: ResolveContext,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(base)) {
    if (value !== undefined) {
      env[name] = value;
    }
  }
  for (const [name, value] of Object.entries(extra ?? {})) {
    // Numbers and booleans are what users mean when they forget the quotes.
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      env[name] = expand(String(value), ctx);
    }
  }
  return env;
}

/** Looks a program up the way the shell would, in the environment the server will get. */
export function findOnPath(
  program: string,
  env: Readonly<Record<string, string | undefined>>,
  ctx: Pick<ResolveContext, 'platform' | 'isExecutable'>,
): string | undefined {
  const windows = ctx.platform === 'win32';
  const p = windows ? path.win32 : path.posix;
  // Windows spells it Path; the lookup is case-insensitive there.
  const pathKey = windows ? Object.keys(env).find((key) => key.toUpperCase() === 'PATH') : 'PATH';
  const dirs = (pathKey === undefined ? '' : (env[pathKey] ?? '')).split(windows ? ';' : ':');
  const extensions = windows ? (env['PATHEXT'] ?? '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of dirs) {
    if (dir === '') {
      continue;
    }
    for (const ext of extensions) {
      const candidate = p.join(dir, program + ext.toLowerCase());
      if (ctx.isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}
