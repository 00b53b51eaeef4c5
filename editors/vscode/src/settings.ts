// The `codegeex2.*` settings as the server sees them.
//
// Pure: no `vscode` import, so the unit tests run on plain Node.

/** The configuration section, also the section name of `workspace/didChangeConfiguration`. */
export const SECTION = 'codegeex2';

/**
 * Keys the server reads (camelCase, as on the wire). The Python test checks package.json
 * against the server's own list, and a unit test checks this list against package.json.
 */
export const SERVER_SETTING_KEYS = [
  'model',
  'device',
  'dtype',
  'quantize',
  'kernels',
  'numGpus',
  'maxContextTokens',
  'contextTokens',
  'maxNewTokens',
  'temperature',
  'topP',
  'topK',
  'multiline',
  'candidates',
  'debounceMs',
  'prefixCacheMb',
  'compile',
  'speculative',
  'backend',
  'serverUrl',
  'servedModel',
  'requestTimeoutMs',
  'sharedIdleMinutes',
  'enable',
  'disabledLanguages',
  'exclude',
] as const;

export type ServerSettingKey = (typeof SERVER_SETTING_KEYS)[number];

/** Keys only the extension uses: how to start the server, which the server never sees. */
export const LAUNCH_SETTING_KEYS = ['serverCommand', 'pythonPath', 'serverEnv'] as const;

export type LaunchSettingKey = (typeof LAUNCH_SETTING_KEYS)[number];

/** Keys that change only what the extension does, read when needed: no restart, no message. */
export const CLIENT_SETTING_KEYS = ['popupCompletions', 'trace.server'] as const;

/**
 * Keys that decide what program runs, what is loaded, and where the code and the API key go.
 * They have machine scope in package.json, and are read from the user's settings only (see
 * `userValue`): an opened repository's `.vscode/settings.json` cannot set them. The server's
 * share of them is its `USER_ONLY` list, which the Python test checks package.json against.
 */
export const USER_ONLY_SETTING_KEYS = [...LAUNCH_SETTING_KEYS, 'model', 'backend', 'serverUrl'] as const;

/**
 * Server keys the server takes only at start (not from `didChangeConfiguration`), so a change
 * of them restarts it.
 */
export const START_ONLY_SETTING_KEYS = ['serverUrl'] as const;

/** What `inspect` tells about one key; only the user's and the contributed values are read. */
export interface InspectedValue<T> {
  defaultValue?: T;
  globalValue?: T;
}

/** The slice of `vscode.WorkspaceConfiguration` that these functions need. */
export interface ConfigurationReader {
  get<T>(key: string): T | undefined;
  inspect<T>(key: string): InspectedValue<T> | undefined;
}

/**
 * A setting's value as these functions use it: for the keys of `USER_ONLY_SETTING_KEYS`, the
 * user's value or the default, whatever a workspace says. VS Code already ignores workspace
 * values of machine-scoped settings; reading them this way keeps that true even where a
 * workspace value would reach `get` (an older VS Code, a setting contributed elsewhere).
 */
export function userValue<T>(config: ConfigurationReader, key: string): T | undefined {
  if (!(USER_ONLY_SETTING_KEYS as readonly string[]).includes(key)) {
    return config.get<T>(key);
  }
  const inspected = config.inspect<T>(key);
  return inspected?.globalValue ?? inspected?.defaultValue;
}

/** What a settings change asks the extension to do. */
export interface ConfigurationChange {
  affectsConfiguration(section: string): boolean;
}

/**
 * The server's settings, with every key present: the effective value (user, workspace or the
 * contributed default). Sending all of them, not only the ones a user set, means that removing
 * a setting puts the server back on the default instead of leaving the old value in place.
 */
export function serverSettings(config: ConfigurationReader): Record<ServerSettingKey, unknown> {
  const settings = {} as Record<ServerSettingKey, unknown>;
  for (const key of SERVER_SETTING_KEYS) {
    const value = userValue<unknown>(config, key);
    // `null` tells the server "keep what you have", which is also right for an unset key.
    settings[key] = value === undefined ? null : value;
  }
  return settings;
}

/** The `initializationOptions` object: the settings themselves, camelCase keys at the top level. */
export function initializationOptions(config: ConfigurationReader): Record<string, unknown> {
  return serverSettings(config);
}

/** The `workspace/didChangeConfiguration` payload, in the shape VS Code clients use. */
export function didChangeConfigurationParams(config: ConfigurationReader): {
  settings: Record<string, Record<string, unknown>>;
} {
  return { settings: { [SECTION]: serverSettings(config) } };
}

export type ChangeAction = 'none' | 'notify' | 'restart';

/**
 * A change of how the server is started, or of a setting it takes only at start, needs a new
 * process; a change of anything else is sent to the running server (which reloads the model
 * itself when model, device or dtype change).
 */
export function actionForChange(change: ConfigurationChange): ChangeAction {
  const restarts = [...LAUNCH_SETTING_KEYS, ...START_ONLY_SETTING_KEYS];
  if (restarts.some((key) => change.affectsConfiguration(`${SECTION}.${key}`))) {
    return 'restart';
  }
  if (SERVER_SETTING_KEYS.some((key) => change.affectsConfiguration(`${SECTION}.${key}`))) {
    return 'notify';
  }
  return 'none';
}
