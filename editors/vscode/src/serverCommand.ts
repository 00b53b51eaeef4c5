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
  /** True when the path names a file this user may execute. */
  isExecutable(file: string): boolean;
}

export interface ServerLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
  /** The server's working directory: the user's home, never the workspace. */
  cwd: string;
  /** Where the command came from, for the log. */
  source: 'serverCommand' | 'pythonPath' | 'PATH';
}

/**
 * How `codegeex2.pythonPath` runs the server: isolated (`-I`), so neither the working
 * directory nor `PYTHONPATH` can put a repository's modules in place of the server's own.
 */
export const PYTHON_ARGS: readonly string[] = ['-I', '-m', 'codegeex2_lsp'];

/** A variable that would let the opened repository choose the program that runs. */
const WORKSPACE_VARIABLE = /\$\{workspaceFolder(Basename)?\}/;

export type Resolution = { ok: true; launch: ServerLaunch } | { ok: false; message: string };

/**
 * `codegeex2.serverCommand` wins, then `codegeex2.pythonPath`, then `codegeex2-lsp` on PATH.
 * The order follows how specific each setting is: a full command line says everything.
 */
export function resolveServerCommand(settings: LaunchSettings, ctx: ResolveContext): Resolution {
  const named = [
    ...commandArgv(settings.serverCommand),
    settings.pythonPath ?? '',
    ...Object.values(settings.serverEnv ?? {}).map(String),
  ];
  if (named.some((value) => WORKSPACE_VARIABLE.test(value))) {
    return {
      ok: false,
      message:
        "'${workspaceFolder}' is not expanded in 'codegeex2.serverCommand', 'codegeex2.pythonPath' or " +
        "'codegeex2.serverEnv': the program that runs must not depend on the repository that is open. " +
        'Use an absolute path.',
    };
  }
  const env = mergeEnv(ctx.env, settings.serverEnv, ctx);
  const cwd = ctx.homeDir;

  const argv = commandArgv(settings.serverCommand).map((arg) => expand(arg, ctx));
  const [program, ...args] = argv;
  if (program !== undefined) {
    return { ok: true, launch: { command: program, args, env, cwd, source: 'serverCommand' } };
  }

  const python = (settings.pythonPath ?? '').trim();
  if (python !== '') {
    return {
      ok: true,
      launch: { command: expand(python, ctx), args: [...PYTHON_ARGS], env, cwd, source: 'pythonPath' },
    };
  }

  const found = findOnPath(DEFAULT_EXECUTABLE, env, ctx);
  if (found !== undefined) {
    return { ok: true, launch: { command: found, args: [], env, cwd, source: 'PATH' } };
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

/** `~`, `${userHome}` and `${env:NAME}`: nothing that depends on the open workspace. */
export function expand(value: string, ctx: Pick<ResolveContext, 'env' | 'homeDir'>): string {
  let result = value.replace(/\$\{(userHome|env:([A-Za-z_][A-Za-z0-9_]*))\}/g, (_whole, name: string, envName?: string) => {
    if (name === 'userHome') {
      return ctx.homeDir;
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
