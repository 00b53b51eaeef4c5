// The status-bar menu and what the toggles tell the user: pure, so unit tests cover them.

export interface MenuEntry {
  label: string;
  command: string;
}

/** The menu the status bar item opens; the per-language toggle needs an editor to name it. */
export function menuEntries(languageId: string | undefined): MenuEntry[] {
  const entries: MenuEntry[] = [{ label: 'Toggle suggestions everywhere', command: 'codegeex2.toggleSuggestions' }];
  if (languageId !== undefined) {
    entries.push({ label: `Toggle suggestions for ${languageId}`, command: 'codegeex2.toggleLanguage' });
  }
  entries.push(
    { label: 'Show log', command: 'codegeex2.showLog' },
    { label: 'Restart server', command: 'codegeex2.restartServer' },
  );
  return entries;
}

/** The server's answer to `codegeex2.toggle` in words; null when the answer is not one. */
export function describeToggle(result: unknown): string | null {
  if (typeof result !== 'object' || result === null) {
    return null;
  }
  const { enabled, languageId } = result as { enabled?: unknown; languageId?: unknown };
  if (typeof enabled !== 'boolean') {
    return null;
  }
  const where = typeof languageId === 'string' ? ` for ${languageId}` : '';
  return `CodeGeeX2 suggestions ${enabled ? 'on' : 'off'}${where}`;
}
