// The status bar's state machine and what each state shows.

import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import { describeStatus, StatusTracker, statusView, type Status, type StatusEvent } from '../src/status';

function run(events: StatusEvent[]): { final: Status; seen: Status['kind'][] } {
  const seen: Status['kind'][] = [];
  const tracker = new StatusTracker((status) => seen.push(status.kind));
  for (const event of events) {
    tracker.handle(event);
  }
  return { final: tracker.status, seen };
}

const begin: StatusEvent = { type: 'progressBegin', token: 't1', title: 'Loading model THUDM/codegeex2-6b' };

test('a normal start: starting, loading with progress, ready', () => {
  const { final, seen } = run([
    { type: 'starting' },
    { type: 'running' },
    begin,
    { type: 'progressReport', token: 't1', message: 'weights', percentage: 40 },
    { type: 'progressReport', token: 't1', percentage: 80 },
    { type: 'progressEnd', token: 't1' },
  ]);
  assert.deepEqual(final, { kind: 'ready' });
  assert.deepEqual(seen, ['starting', 'loading', 'loading', 'loading', 'ready']);
});

test('a report keeps the last message and percentage it did not replace', () => {
  const { final } = run([
    { type: 'starting' },
    begin,
    { type: 'progressReport', token: 't1', message: 'weights', percentage: 40 },
    { type: 'progressReport', token: 't1', percentage: 80 },
  ]);
  assert.deepEqual(final, { kind: 'loading', title: begin.type === 'progressBegin' ? begin.title : '', message: 'weights', percentage: 80 });
});

test('a load failure stays an error after its progress ends, whatever the order', () => {
  const errorFirst = run([{ type: 'starting' }, begin, { type: 'serverError', message: 'no such model' }, { type: 'progressEnd', token: 't1' }]);
  assert.deepEqual(errorFirst.final, { kind: 'error', message: 'no such model' });
  const endFirst = run([{ type: 'starting' }, begin, { type: 'progressEnd', token: 't1' }, { type: 'serverError', message: 'no such model' }]);
  assert.deepEqual(endFirst.final, { kind: 'error', message: 'no such model' });
});

test('a new load after an error (a settings change) clears it', () => {
  const { final } = run([
    { type: 'starting' },
    begin,
    { type: 'serverError', message: 'bad' },
    { type: 'progressEnd', token: 't1' },
    { type: 'progressBegin', token: 't2', title: 'Loading model /m' },
    { type: 'progressEnd', token: 't2' },
  ]);
  assert.deepEqual(final, { kind: 'ready' });
});

test('progress for another token does not move the display', () => {
  const { final } = run([
    { type: 'starting' },
    begin,
    { type: 'progressReport', token: 'other', percentage: 99 },
    { type: 'progressEnd', token: 'other' },
  ]);
  assert.equal(final.kind, 'loading');
  assert.ok(final.kind === 'loading' && final.percentage === undefined);
});

test('running does not claim ready before the model has loaded', () => {
  assert.deepEqual(run([{ type: 'starting' }, { type: 'running' }]).final, { kind: 'starting' });
});

test('crash, start failure, restart and stop', () => {
  assert.equal(run([{ type: 'starting' }, begin, { type: 'crashed', message: 'gone' }]).final.kind, 'error');
  assert.equal(run([{ type: 'starting' }, { type: 'startFailed', message: 'not found' }]).final.kind, 'error');
  assert.equal(run([{ type: 'startFailed', message: 'x' }, { type: 'starting' }]).final.kind, 'starting');
  assert.equal(run([{ type: 'starting' }, { type: 'stopped' }]).final.kind, 'stopped');
});

test('the listener hears only real changes', () => {
  const { seen } = run([{ type: 'starting' }, { type: 'starting' }, { type: 'running' }]);
  assert.deepEqual(seen, ['starting']);
});

test('views: spinner with percentage while loading, error background, log in every tooltip', () => {
  const loading = statusView({ kind: 'loading', title: 'Loading model', message: 'weights', percentage: 41.6 });
  assert.equal(loading.text, '$(loading~spin) CodeGeeX2 42%');
  assert.match(loading.tooltip, /Loading model: weights/);
  assert.equal(statusView({ kind: 'ready' }).text, '$(check) CodeGeeX2');
  const error = statusView({ kind: 'error', message: 'Model not found.' });
  assert.equal(error.background, 'statusBarItem.errorBackground');
  assert.match(error.tooltip, /Model not found\./);
  for (const kind of ['stopped', 'starting', 'ready'] as const) {
    assert.match(statusView({ kind }).tooltip, /Click for the menu/);
    assert.equal(statusView({ kind }).background, undefined);
  }
});

test('log lines name the state and its detail', () => {
  assert.equal(describeStatus({ kind: 'ready' }), 'ready');
  assert.equal(describeStatus({ kind: 'loading', title: 'Loading model m' }), 'loading (Loading model m)');
  assert.equal(describeStatus({ kind: 'error', message: 'no GPU' }), 'error (no GPU)');
});

test('a progress title that is only the name is not repeated', () => {
  assert.equal(
    statusView({ kind: 'loading', title: 'CodeGeeX2', message: 'Reading the tokenizer' }).tooltip,
    'CodeGeeX2: Reading the tokenizer\nClick for the menu.',
  );
  assert.match(statusView({ kind: 'loading', title: 'CodeGeeX2' }).tooltip, /^CodeGeeX2: loading the model\n/);
});
