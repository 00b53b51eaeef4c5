// Entry point: wires the log, the status bar item, the commands and the server together.

import * as vscode from 'vscode';

import { describeToggle, menuEntries } from './menu';
import { ServerController } from './server';
import { describeStatus, StatusTracker, statusView, type Status } from './status';

let controller: ServerController | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const output = vscode.window.createOutputChannel('CodeGeeX2', { log: true });

  const item = vscode.window.createStatusBarItem('codegeex2.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'CodeGeeX2';
  item.command = 'codegeex2.showMenu';
  let lastKind: Status['kind'] | undefined;
  const render = (status: Status): void => {
    // State changes go to the log too (not every percentage), so a bug report shows the order.
    if (status.kind !== lastKind) {
      lastKind = status.kind;
      output.info(`Status: ${describeStatus(status)}`);
    }
    const view = statusView(status);
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.backgroundColor = view.background === undefined ? undefined : new vscode.ThemeColor(view.background);
  };
  const tracker = new StatusTracker(render);
  render(tracker.status);
  item.show();

  controller = new ServerController(output, tracker);
  const server = controller;
  // The server's own commands (codegeex2.toggle, codegeex2.accept, codegeex2.status) are
  // registered by the language client; these put them in the palette and the menu.
  // The newest toggle's message replaces the one before, so the status bar never shows both.
  let toggleMessage: vscode.Disposable | undefined;
  const toggle = async (args: unknown[]): Promise<void> => {
    try {
      const message = describeToggle(await server.executeCommand('codegeex2.toggle', args));
      output.info(message ?? 'The server gave no state for the toggle.');
      if (message !== null) {
        toggleMessage?.dispose();
        toggleMessage = vscode.window.setStatusBarMessage(message, 10_000);
      }
    } catch (error) {
      void vscode.window.showErrorMessage(`CodeGeeX2: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  context.subscriptions.push(
    output,
    item,
    server,
    vscode.commands.registerCommand('codegeex2.showLog', () => output.show(true)),
    vscode.commands.registerCommand('codegeex2.restartServer', () => server.restart()),
    vscode.commands.registerCommand('codegeex2.toggleSuggestions', () => toggle([])),
    vscode.commands.registerCommand('codegeex2.toggleLanguage', () => {
      const languageId = vscode.window.activeTextEditor?.document.languageId;
      return languageId === undefined ? toggle([]) : toggle([{ languageId }]);
    }),
    vscode.commands.registerCommand('codegeex2.showMenu', async () => {
      const entries = menuEntries(vscode.window.activeTextEditor?.document.languageId);
      const picked = await vscode.window.showQuickPick(entries, { title: 'CodeGeeX2' });
      if (picked !== undefined) {
        await vscode.commands.executeCommand(picked.command);
      }
    }),
  );
  void server.start();
}

export function deactivate(): Promise<void> | undefined {
  // Awaited by VS Code, so the server process is asked to exit before the host goes away.
  return controller?.stop();
}
