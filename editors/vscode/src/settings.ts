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
  'numGpus',
  'maxContextTokens',
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

/** The slice of `vscode.WorkspaceConfiguration` that these functions need. */
export interface ConfigurationReader {
  get<T>(key: string): T | undefined;
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
    const value = config.get<unknown>(key);
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
 * A change of how the server is started needs a new process; a change of anything else is
 * sent to the running server (which reloads the model itself when model, device or dtype
 * change).
 */
export function actionForChange(change: ConfigurationChange): ChangeAction {
  if (LAUNCH_SETTING_KEYS.some((key) => change.affectsConfiguration(`${SECTION}.${key}`))) {
    return 'restart';
  }
  if (SERVER_SETTING_KEYS.some((key) => change.affectsConfiguration(`${SECTION}.${key}`))) {
    return 'notify';
  }
  return 'none';
}
