// Drives code-server in headless Chromium: open the sample file, type, wait for the model's
// ghost text, accept it with Tab, save, and check the file on disk and that the accept was
// counted; toggle suggestions off and on from the status bar menu. Called by e2e.sh, which
// sets everything up; the environment variables below are its interface.
//
// Exit code 0 and a JSON line with timings on success; 1 with the reason otherwise.

import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

const url = env('E2E_URL'); // code-server, with ?folder= for the project
const sampleFile = env('E2E_SAMPLE'); // the file to open, already in the project
const expectedFile = env('E2E_EXPECTED'); // the sample's text after accepting the suggestion
const artifacts = env('E2E_ARTIFACTS'); // screenshots go here
const chromiumPath = env('E2E_CHROMIUM');
const userSettings = env('E2E_USER_SETTINGS'); // code-server's User/settings.json
const statsFile = env('E2E_STATS'); // the server's acceptance counts, in the state directory
const typed = process.env.E2E_TYPED ?? ' ';
const readyTimeout = Number(process.env.E2E_READY_TIMEOUT_MS ?? 180_000);
const ghostTimeout = Number(process.env.E2E_GHOST_TIMEOUT_MS ?? 90_000);

// playwright-core lives in e2e.sh's cache, not in the extension's dependencies.
const require = createRequire(path.join(env('E2E_NODE_MODULES'), 'noop.js'));
const { chromium } = require('playwright-core');

// The extension's item, by the id VS Code gives it (extension id + item id). The window's own
// progress item also says "CodeGeeX2" while the load notification is hidden.
const STATUS_ITEM = '.statusbar-item[id$="codegeex2.status"]';

const started = Date.now();
const timings = {};
const mark = (name) => {
  timings[name] = Number(((Date.now() - started) / 1000).toFixed(1));
  console.log(`[${timings[name]} s] ${name}`);
};

const context = await chromium.launchPersistentContext(path.join(artifacts, 'chromium-profile'), {
  executablePath: chromiumPath,
  headless: true,
  timeout: 60_000,
  viewport: { width: 1400, height: 900 },
  args: [
    // Root in a container has no user namespaces for the sandbox.
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(30_000);
const consoleErrors = [];
// Nothing should leave this machine; list what tried, so a new VS Code feature that phones
// home shows up here instead of going unnoticed.
const outside = new Set();
context.on('request', (request) => {
  const host = new URL(request.url()).hostname;
  if (host && host !== '127.0.0.1' && host !== 'localhost' && !request.url().startsWith('data:')) {
    outside.add(host);
  }
});
page.on('console', (message) => {
  if (message.type() === 'error') {
    const where = message.location()?.url;
    consoleErrors.push(where ? `${message.text()} (${where})` : message.text());
  }
});

const shot = async (name) => {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
};

/** Polls the item until its icon is `icon`; an unexpected error icon fails at once. */
async function waitForStatus(status, icon, timeout) {
  let last = '';
  const deadline = Date.now() + timeout;
  for (;;) {
    const html = await status.innerHTML();
    const label = ((await status.getAttribute('aria-label')) ?? (await status.innerText())).replace(/\s+/g, ' ').trim();
    if (label !== last) {
      console.log(`status: ${label}`);
      last = label;
    }
    if (html.includes(`codicon-${icon}`)) {
      return;
    }
    if (icon !== 'error' && html.includes('codicon-error')) {
      throw new Error(`the status bar shows an error: ${label}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`no '${icon}' in the status bar after ${timeout / 1000} s (status: ${label})`);
    }
    await page.waitForTimeout(250);
  }
}

/** Sets a string setting in the Settings editor; returns the value it had. */
async function setSetting(id, value) {
  await runCommand('Preferences: Open User Settings');
  // The search box is a small editor of its own; click it rather than trust the focus.
  const search = page.locator('.settings-editor .settings-header .monaco-editor').first();
  await search.waitFor();
  // Each setting's input is labelled with its id; the search only makes sure it is rendered.
  const input = page.locator(`.settings-editor input[aria-label="${id}"]`).first();
  for (let attempt = 1; ; attempt++) {
    await search.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type(`@id:${id}`);
    try {
      await input.waitFor({ timeout: 5_000 });
      break;
    } catch (error) {
      if (attempt === 3) {
        throw error;
      }
    }
  }
  const previous = await input.inputValue();
  await input.fill(value);
  // The editor writes the value after a short debounce; leaving the field flushes it.
  await page.keyboard.press('Tab');
  const savedBy = Date.now() + 15_000;
  let saved;
  while ((saved = JSON.parse(fs.readFileSync(userSettings, 'utf8'))[id]) !== value && Date.now() < savedBy) {
    await page.waitForTimeout(250);
  }
  if (saved !== value) {
    throw new Error(`the Settings editor did not save ${id} (settings.json has ${JSON.stringify(saved)})`);
  }
  // Recent VS Code opens Settings as a modal that keeps the keyboard; close it.
  const close = page.locator('.modal-editor-part a[aria-label^="Close Modal Editor"]');
  if ((await close.count()) > 0) {
    await close.first().click();
    await page.locator('.modal-editor-part').first().waitFor({ state: 'hidden' });
  }
  return previous;
}

/** Waits until the acceptance counts on disk say `accepted` (the server writes them within seconds). */
async function waitForAccepted(accepted, timeout) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = JSON.parse(fs.readFileSync(statsFile, 'utf8'));
    } catch {
      last = undefined;
    }
    if (last?.accepted === accepted) {
      return last;
    }
    if (Date.now() > deadline) {
      throw new Error(`the stats file never counted ${accepted} accepted (it has ${JSON.stringify(last)})`);
    }
    await page.waitForTimeout(250);
  }
}

/** Picks `entry` from the menu the status bar item opens, and waits for the toggle's message. */
async function toggleFromMenu(status, entry, message) {
  await status.click();
  await page.locator('.quick-input-list .monaco-list-row', { hasText: entry }).first().click();
  await page.locator('.statusbar-item', { hasText: message }).first().waitFor({ timeout: 15_000 });
}

async function runCommand(title) {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor();
  await input.fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor();
  await page.keyboard.press('Enter');
}

let failure;
try {
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  mark('workbench');
  // Record every state the status bar item passes through: loading a tiny model takes well
  // under a second, too short for polling to see.
  await page.evaluate((STATUS_ITEM) => {
    const seen = [];
    window.__codegeex2States = seen;
    const record = () => {
      for (const item of document.querySelectorAll(STATUS_ITEM)) {
        const icon = item.querySelector('.codicon')?.className.match(/codicon-([a-z-~]+)/)?.[1] ?? '';
        const label = item.getAttribute('aria-label') ?? item.textContent ?? '';
        const state = `${icon} ${label.replace(/\s+/g, ' ').trim()}`;
        if (seen[seen.length - 1] !== state) {
          seen.push(state);
        }
      }
    };
    new MutationObserver(record).observe(document.body, {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
      attributeFilter: ['class', 'aria-label'],
    });
    record();
  }, STATUS_ITEM);

  // Open the sample from the explorer, which the ?folder= workspace shows on start.
  const name = path.basename(sampleFile);
  await page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first().click({ timeout: 60_000 });
  const editor = page.locator('.editor-instance .monaco-editor').first();
  await editor.locator('.view-lines').waitFor();
  mark('file open');

  // The status bar item turns into a check mark when the model has loaded.
  const status = page.locator(STATUS_ITEM).first();
  await status.waitFor({ timeout: 60_000 });
  await waitForStatus(status, 'check', readyTimeout);
  mark('model ready');
  const states = await page.evaluate(() => window.__codegeex2States);
  console.log(`status bar states: ${JSON.stringify(states)}`);
  if (!states.some((state) => /Loading/.test(state))) {
    // The server reports the load as work-done progress; without it the item goes straight
    // from "starting" to ready, which works but shows the user less.
    console.log('warning: the status bar never showed the model loading');
  }
  await shot('1-ready');

  // Put the cursor at the end of the file (the last line, "        return") and type.
  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+End');
  await page.keyboard.type(typed, { delay: 50 });
  mark('typed');

  const ghost = editor.locator('.ghost-text-decoration, .ghost-text');
  await ghost.first().waitFor({ state: 'visible', timeout: ghostTimeout });
  // Multi-line suggestions render in parts; give the rest a moment to paint for the picture.
  await page.waitForTimeout(300);
  mark('ghost text');
  const ghostText = (await ghost.allInnerTexts()).join('⏎');
  console.log(`ghost text: ${JSON.stringify(ghostText)}`);
  await shot('2-ghost-text');

  await page.keyboard.press('Tab');
  await page.waitForTimeout(300);
  await shot('3-accepted');
  await page.keyboard.press('Control+S');
  mark('accepted and saved');

  // The file on disk is the ground truth: compare it with what the server suggests there.
  const expected = fs.readFileSync(expectedFile, 'utf8');
  const saveDeadline = Date.now() + 15_000;
  let actual = fs.readFileSync(sampleFile, 'utf8');
  while (actual !== expected && Date.now() < saveDeadline) {
    await page.waitForTimeout(250);
    actual = fs.readFileSync(sampleFile, 'utf8');
  }
  if (actual !== expected) {
    throw new Error(
      `the saved file is not the sample with the suggestion inserted\n--- expected\n${expected}\n--- actual\n${actual}`,
    );
  }
  mark('file checked');

  // Tab ran the item's codegeex2.accept: the server counted it and wrote it down.
  const stats = await waitForAccepted(1, 30_000);
  console.log(`stats: ${JSON.stringify({ shown: stats.shown, accepted: stats.accepted, acceptedChars: stats.acceptedChars })}`);
  mark('accept counted');

  // The status bar menu toggles suggestions off and on again; the server answers the state.
  await toggleFromMenu(status, 'Toggle suggestions everywhere', 'CodeGeeX2 suggestions off');
  await shot('4-toggled-off');
  await toggleFromMenu(status, 'Toggle suggestions everywhere', 'CodeGeeX2 suggestions on');
  await toggleFromMenu(status, 'Toggle suggestions for python', 'CodeGeeX2 suggestions off for python');
  await toggleFromMenu(status, 'Toggle suggestions for python', 'CodeGeeX2 suggestions on for python');
  mark('toggled');

  // A settings change, made in the Settings editor as a user would, reaches the server: a
  // device this machine does not have turns the item red. (The model is a machine setting,
  // which the User tab of a remote window does not apply.)
  const goodDevice = await setSetting('codegeex2.device', 'cuda:9');
  await waitForStatus(status, 'error', 60_000);
  console.log(`error tooltip: ${JSON.stringify(await status.getAttribute('aria-label'))}`);
  await shot('5-load-error');
  mark('load error shown');

  // Back to the good device, then the restart command from the palette brings it back.
  await setSetting('codegeex2.device', goodDevice);
  // The check mark must come after a "stopped", so it is the restarted server's.
  const before = (await page.evaluate(() => window.__codegeex2States)).length;
  await runCommand('CodeGeeX2: Restart Server');
  await page.waitForFunction(
    (from) => {
      const states = window.__codegeex2States.slice(from);
      return states.some((state) => state.startsWith('circle-slash')) && states.at(-1).startsWith('check');
    },
    before,
    { timeout: readyTimeout, polling: 250 },
  );
  console.log(`status bar states since the restart: ${JSON.stringify((await page.evaluate(() => window.__codegeex2States)).slice(before))}`);
  mark('restarted and ready');

  await runCommand('CodeGeeX2: Show Log');
  await page.locator('.part.panel .monaco-editor', { hasText: 'Status: ready' }).first().waitFor({ timeout: 15_000 });
  await shot('6-log');
  mark('log shown');
} catch (error) {
  failure = error;
  await shot('failure').catch(() => undefined);
  // The page as it was, for finding out which selector no longer matches.
  await page
    .content()
    .then((html) => fs.writeFileSync(path.join(artifacts, 'failure.html'), html))
    .catch(() => undefined);
} finally {
  await context.close().catch(() => undefined);
}

if (consoleErrors.length > 0) {
  console.log(`browser console errors (${consoleErrors.length}), first ones:`);
  for (const text of consoleErrors.slice(0, 10)) {
    console.log(`  ${text.split('\n')[0].slice(0, 300)}`);
  }
}
if (outside.size > 0) {
  console.log(`requests for other hosts (none can succeed here): ${[...outside].join(', ')}`);
}
console.log(JSON.stringify({ ok: failure === undefined, timings }));
if (failure !== undefined) {
  console.log(`error: ${failure instanceof Error ? failure.message : String(failure)}`);
  process.exit(1);
}
