// The status-bar menu's entries and the toggles' messages.

import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import { describeToggle, menuEntries } from '../src/menu';

test('the menu offers the language toggle only with an editor open', () => {
  assert.deepEqual(
    menuEntries('python').map((entry) => entry.command),
    ['codegeex2.toggleSuggestions', 'codegeex2.toggleLanguage', 'codegeex2.showLog', 'codegeex2.restartServer'],
  );
  assert.match(menuEntries('python')[1]?.label ?? '', /python/);
  assert.equal(
    menuEntries(undefined).some((entry) => entry.command === 'codegeex2.toggleLanguage'),
    false,
  );
});

test('toggle answers are put in words', () => {
  assert.equal(describeToggle({ enabled: false }), 'CodeGeeX2 suggestions off');
  assert.equal(describeToggle({ enabled: true, languageId: 'rust' }), 'CodeGeeX2 suggestions on for rust');
  assert.equal(describeToggle({ enabled: 'yes' }), null);
  assert.equal(describeToggle(null), null);
});
