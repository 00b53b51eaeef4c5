// Settings → initializationOptions / didChangeConfiguration, and which changes restart.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import {
  actionForChange,
  CLIENT_SETTING_KEYS,
  didChangeConfigurationParams,
  initializationOptions,
  LAUNCH_SETTING_KEYS,
  SECTION,
  SERVER_SETTING_KEYS,
  USER_ONLY_SETTING_KEYS,
  type ConfigurationReader,
} from '../src/settings';

interface Contributed {
  default: unknown;
  scope?: string;
}

// Compiled tests live in out/test, so the package root is two levels up.
const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
  contributes: { configuration: { properties: Record<string, Contributed> } };
  capabilities: { untrustedWorkspaces: { restrictedConfigurations: string[] } };
};
const properties = packageJson.contributes.configuration.properties;

/**
 * A configuration that answers as VS Code's would if it applied every workspace value:
 * workspace over user over contributed defaults.
 */
function configuration(user: Record<string, unknown> = {}, workspace: Record<string, unknown> = {}): ConfigurationReader {
  const contributed = (key: string): unknown => properties[`${SECTION}.${key}`]?.default;
  return {
    get<T>(key: string): T | undefined {
      if (key in workspace) {
        return workspace[key] as T;
      }
      if (key in user) {
        return user[key] as T;
      }
      return contributed(key) as T | undefined;
    },
    inspect<T>(key: string) {
      const found: { defaultValue?: T; globalValue?: T } = {};
      if (contributed(key) !== undefined) {
        found.defaultValue = contributed(key) as T;
      }
      if (key in user) {
        found.globalValue = user[key] as T;
      }
      return found;
    },
  };
}

test('package.json contributes every server, launch and client setting, and only those', () => {
  const contributed = Object.keys(properties)
    .map((key) => key.slice(SECTION.length + 1))
    .sort();
  assert.deepEqual(contributed, [...SERVER_SETTING_KEYS, ...LAUNCH_SETTING_KEYS, ...CLIENT_SETTING_KEYS].sort());
});

test('initializationOptions carries every server setting at its default', () => {
  const options = initializationOptions(configuration());
  assert.deepEqual(Object.keys(options).sort(), [...SERVER_SETTING_KEYS].sort());
  assert.equal(options['model'], 'THUDM/codegeex2-6b');
  assert.equal(options['device'], 'auto');
  assert.equal(options['maxNewTokens'], 64);
  assert.equal(options['temperature'], 0);
});

test('user values win and launch settings never reach the server', () => {
  const options = initializationOptions(
    configuration({ model: '/models/tiny', device: 'cpu', maxNewTokens: 16, serverCommand: ['x'] }),
  );
  assert.equal(options['model'], '/models/tiny');
  assert.equal(options['device'], 'cpu');
  assert.equal(options['maxNewTokens'], 16);
  assert.ok(!('serverCommand' in options));
  assert.ok(!('pythonPath' in options));
});

test('a setting the configuration does not know is sent as null, which the server ignores', () => {
  const empty: ConfigurationReader = { get: () => undefined, inspect: () => undefined };
  assert.ok(Object.values(initializationOptions(empty)).every((value) => value === null));
});

test('a workspace cannot set where code goes or what runs, only the rest', () => {
  const workspace = {
    model: '/repo/evil-model',
    backend: 'openai',
    serverUrl: 'http://attacker.example/v1',
    serverCommand: ['/repo/run'],
    maxNewTokens: 8,
  };
  const options = initializationOptions(configuration({ serverUrl: 'https://mine.example/v1' }, workspace));
  assert.equal(options['model'], 'THUDM/codegeex2-6b');
  assert.equal(options['backend'], 'local');
  assert.equal(options['serverUrl'], 'https://mine.example/v1');
  assert.equal(options['maxNewTokens'], 8);
  const sent = didChangeConfigurationParams(configuration({}, workspace)).settings[SECTION];
  assert.equal(sent?.['serverUrl'], 'http://127.0.0.1:8000/v1');
});

test('the user-only settings are machine-scoped and restricted in untrusted workspaces', () => {
  for (const key of USER_ONLY_SETTING_KEYS) {
    assert.equal(properties[`${SECTION}.${key}`]?.scope, 'machine', key);
  }
  assert.deepEqual(
    [...packageJson.capabilities.untrustedWorkspaces.restrictedConfigurations].sort(),
    USER_ONLY_SETTING_KEYS.map((key) => `${SECTION}.${key}`).sort(),
  );
});

test('didChangeConfiguration nests the settings under the section', () => {
  const params = didChangeConfigurationParams(configuration({ topK: 40 }));
  assert.deepEqual(Object.keys(params.settings), [SECTION]);
  assert.equal(params.settings[SECTION]?.['topK'], 40);
});

function change(...changed: string[]): { affectsConfiguration(section: string): boolean } {
  // VS Code answers true for the changed key and every section above it.
  return {
    affectsConfiguration: (section: string) =>
      changed.some((key) => key === section || key.startsWith(`${section}.`)),
  };
}

test('launch settings restart, server settings notify, others do nothing', () => {
  assert.equal(actionForChange(change('codegeex2.serverCommand')), 'restart');
  assert.equal(actionForChange(change('codegeex2.pythonPath')), 'restart');
  assert.equal(actionForChange(change('codegeex2.serverEnv')), 'restart');
  assert.equal(actionForChange(change('codegeex2.model')), 'notify');
  assert.equal(actionForChange(change('codegeex2.backend')), 'notify');
  assert.equal(actionForChange(change('codegeex2.serverUrl')), 'restart');
  assert.equal(actionForChange(change('codegeex2.debounceMs')), 'notify');
  assert.equal(actionForChange(change('codegeex2.model', 'codegeex2.pythonPath')), 'restart');
  assert.equal(actionForChange(change('codegeex2.trace.server')), 'none');
  assert.equal(actionForChange(change('codegeex2.popupCompletions')), 'none');
  assert.equal(actionForChange(change('editor.fontSize')), 'none');
});
