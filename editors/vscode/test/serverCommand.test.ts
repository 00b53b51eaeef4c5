// Which command starts the server.

import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import { expand, findOnPath, resolveServerCommand, type ResolveContext } from '../src/serverCommand';

function context(executables: string[] = [], env: Record<string, string> = {}): ResolveContext {
  return {
    env: { PATH: '/usr/local/bin:/usr/bin', HOME: '/home/u', ...env },
    platform: 'linux',
    homeDir: '/home/u',
    isExecutable: (file) => executables.includes(file),
  };
}

test('codegeex2-lsp on PATH is the default', () => {
  const result = resolveServerCommand({}, context(['/usr/bin/codegeex2-lsp']));
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/usr/bin/codegeex2-lsp');
  assert.deepEqual(result.launch.args, []);
  assert.equal(result.launch.source, 'PATH');
});

test('the first PATH entry that has it wins', () => {
  const result = resolveServerCommand({}, context(['/usr/local/bin/codegeex2-lsp', '/usr/bin/codegeex2-lsp']));
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/usr/local/bin/codegeex2-lsp');
});

test('nothing found is an error that names both settings', () => {
  const result = resolveServerCommand({ serverCommand: [], pythonPath: '  ' }, context());
  assert.ok(!result.ok);
  assert.match(result.message, /codegeex2\.serverCommand/);
  assert.match(result.message, /codegeex2\.pythonPath/);
});

test('serverCommand wins over pythonPath and PATH, with variables expanded', () => {
  const result = resolveServerCommand(
    { serverCommand: ['~/venv/bin/codegeex2-lsp', '--log-file', '${userHome}/cg2.log'], pythonPath: '/usr/bin/python3' },
    context(['/usr/bin/codegeex2-lsp']),
  );
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/home/u/venv/bin/codegeex2-lsp');
  assert.deepEqual(result.launch.args, ['--log-file', '/home/u/cg2.log']);
  assert.equal(result.launch.source, 'serverCommand');
});

test('no launch setting may depend on the open workspace', () => {
  for (const settings of [
    { serverCommand: ['${workspaceFolder}/.venv/bin/codegeex2-lsp'] },
    { serverCommand: ['python3', '${workspaceFolderBasename}.py'] },
    { pythonPath: '${workspaceFolder}/.venv/bin/python' },
    { serverEnv: { PYTHONPATH: '${workspaceFolder}' } },
  ]) {
    const result = resolveServerCommand(settings, context(['/usr/bin/codegeex2-lsp']));
    assert.ok(!result.ok, JSON.stringify(settings));
    assert.match(result.message, /workspaceFolder/);
  }
});

test('every launch runs in the home directory, never the workspace', () => {
  for (const settings of [{ serverCommand: ['/opt/codegeex2-lsp'] }, { pythonPath: '/usr/bin/python3' }, {}]) {
    const result = resolveServerCommand(settings, context(['/usr/bin/codegeex2-lsp']));
    assert.ok(result.ok);
    assert.equal(result.launch.cwd, '/home/u');
  }
});

test('a serverCommand string is one program, even with spaces', () => {
  const result = resolveServerCommand({ serverCommand: '/opt/My Tools/codegeex2-lsp' }, context());
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/opt/My Tools/codegeex2-lsp');
  assert.deepEqual(result.launch.args, []);
});

test('a serverCommand with an empty program is ignored', () => {
  const result = resolveServerCommand({ serverCommand: ['', '--x'] }, context(['/usr/bin/codegeex2-lsp']));
  assert.ok(result.ok);
  assert.equal(result.launch.source, 'PATH');
});

test('pythonPath runs the module isolated from the working directory and PYTHONPATH', () => {
  const result = resolveServerCommand({ pythonPath: '${userHome}/.venv/bin/python' }, context());
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/home/u/.venv/bin/python');
  assert.deepEqual(result.launch.args, ['-I', '-m', 'codegeex2_lsp']);
  assert.equal(result.launch.source, 'pythonPath');
});

test('serverEnv is added to the environment, and its PATH is the one searched', () => {
  const result = resolveServerCommand(
    { serverEnv: { HF_HUB_OFFLINE: 1, PATH: '/opt/cg2/bin:${env:PATH}', IGNORED: { a: 1 } } },
    context(['/opt/cg2/bin/codegeex2-lsp']),
  );
  assert.ok(result.ok);
  assert.equal(result.launch.command, '/opt/cg2/bin/codegeex2-lsp');
  assert.equal(result.launch.env['HF_HUB_OFFLINE'], '1');
  assert.equal(result.launch.env['PATH'], '/opt/cg2/bin:/usr/local/bin:/usr/bin');
  assert.equal(result.launch.env['HOME'], '/home/u');
  assert.ok(!('IGNORED' in result.launch.env));
});

test('expand leaves unknown variables and the workspace alone', () => {
  const ctx = { env: {}, homeDir: '/h' };
  assert.equal(expand('${workspaceFolder}/x', ctx), '${workspaceFolder}/x');
  assert.equal(expand('${foo}', ctx), '${foo}');
  assert.equal(expand('${env:NOPE}x', ctx), 'x');
  assert.equal(expand('a~/b', ctx), 'a~/b');
  assert.equal(expand('~', ctx), '/h');
});

test('Windows lookup uses Path, PATHEXT and backslashes', () => {
  const found = findOnPath(
    'codegeex2-lsp',
    { Path: 'C:\\Py\\Scripts;C:\\Windows', PATHEXT: '.COM;.EXE' },
    { platform: 'win32', isExecutable: (file) => file === 'C:\\Py\\Scripts\\codegeex2-lsp.exe' },
  );
  assert.equal(found, 'C:\\Py\\Scripts\\codegeex2-lsp.exe');
});
