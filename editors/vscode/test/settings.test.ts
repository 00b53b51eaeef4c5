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
  type ConfigurationReader,
} from '../src/settings';

interface Contributed {
  default: unknown;
}

// Compiled tests live in out/test, so the package root is two levels up.
const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
  contributes: { configuration: { properties: Record<string, Contributed> } };
};
const properties = packageJson.contributes.configuration.properties;

/** A configuration that answers like VS Code's: contributed defaults under user values. */
function configuration(user: Record<string, unknown> = {}): ConfigurationReader {
  return {
    get<T>(key: string): T | undefined {
      if (key in user) {
        return user[key] as T;
      }
      return properties[`${SECTION}.${key}`]?.default as T | undefined;
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
  const empty: ConfigurationReader = { get: () => undefined };
  assert.ok(Object.values(initializationOptions(empty)).every((value) => value === null));
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
  assert.equal(actionForChange(change('codegeex2.debounceMs')), 'notify');
  assert.equal(actionForChange(change('codegeex2.model', 'codegeex2.pythonPath')), 'restart');
  assert.equal(actionForChange(change('codegeex2.trace.server')), 'none');
  assert.equal(actionForChange(change('codegeex2.popupCompletions')), 'none');
  assert.equal(actionForChange(change('editor.fontSize')), 'none');
});
