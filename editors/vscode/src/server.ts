// The language client's life: start, restart on demand or when the launch settings change,
// forward settings changes, and feed the status tracker.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  MessageType,
  ShowMessageNotification,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';

import { resolveServerCommand, type LaunchSettings, type ServerLaunch } from './serverCommand';
import { actionForChange, didChangeConfigurationParams, initializationOptions, SECTION, userValue } from './settings';
import type { StatusTracker } from './status';

const CLIENT_ID = 'codegeex2';
const CLIENT_NAME = 'CodeGeeX2';
const SHOW_LOG = 'Show Log';

export class ServerController implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private stopping = false;
  // Restarts are chained so that a burst of settings changes cannot start two servers.
  private queue: Promise<void> = Promise.resolve();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly tracker: StatusTracker,
  ) {
    this.disposables.push(vscode.workspace.onDidChangeConfiguration((change) => this.onConfigurationChanged(change)));
  }

  start(): Promise<void> {
    return this.enqueue(() => this.startClient());
  }

  restart(): Promise<void> {
    return this.enqueue(async () => {
      await this.stopClient();
      await this.startClient();
    });
  }

  stop(): Promise<void> {
    return this.enqueue(() => this.stopClient());
  }

  /** Runs one of the server's commands (`workspace/executeCommand`); throws when it is not running. */
  async executeCommand(command: string, args: unknown[]): Promise<unknown> {
    const client = this.client;
    if (client === undefined || !client.isRunning()) {
      throw new Error('the server is not running');
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  dispose(): void {
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
    void this.stop();
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(step, step);
    // Keep the chain alive after a failure; the step itself reports its errors.
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async startClient(): Promise<void> {
    this.tracker.handle({ type: 'starting' });
    const resolution = resolveServerCommand(readLaunchSettings(), {
      env: process.env,
      platform: process.platform,
      homeDir: os.homedir(),
      isExecutable,
    });
    if (!resolution.ok) {
      this.fail(resolution.message);
      return;
    }
    const launch = resolution.launch;
    this.output.info(`Starting ${describe(launch)} (from ${launch.source})`);

    const client = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions(launch), this.clientOptions());
    this.client = client;
    client.onDidChangeState(({ newState }) => {
      if (newState === State.Starting) {
        this.tracker.handle({ type: 'starting' });
      } else if (newState === State.Running) {
        this.tracker.handle({ type: 'running' });
      } else if (this.stopping) {
        this.tracker.handle({ type: 'stopped' });
      } else {
        this.tracker.handle({ type: 'crashed', message: 'the server stopped unexpectedly.' });
      }
    });
    // Registered before start, so it replaces the client's default handler: errors also go to
    // the status bar, and every message offers the log, where the server writes the details.
    client.onNotification(ShowMessageNotification.type, ({ type, message }) => {
      if (type === MessageType.Error) {
        this.tracker.handle({ type: 'serverError', message: withoutName(message) });
      }
      const show =
        type === MessageType.Error
          ? vscode.window.showErrorMessage
          : type === MessageType.Warning
            ? vscode.window.showWarningMessage
            : vscode.window.showInformationMessage;
      void show(withName(message), SHOW_LOG).then((choice) => {
        if (choice === SHOW_LOG) {
          this.output.show(true);
        }
      });
    });
    try {
      await client.start();
    } catch (error) {
      this.fail(`the server could not be started: ${errorMessage(error)}`);
    }
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    if (client === undefined) {
      return;
    }
    this.client = undefined;
    this.stopping = true;
    try {
      if (client.isRunning()) {
        await client.stop(5000);
      }
    } catch (error) {
      this.output.error(`Stopping the server failed: ${errorMessage(error)}`);
    } finally {
      this.stopping = false;
      await client.dispose().catch(() => undefined);
      this.tracker.handle({ type: 'stopped' });
    }
  }

  private clientOptions(): LanguageClientOptions {
    return {
      // Every language: the model completes any text, and the server picks the language tag.
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: () => initializationOptions(vscode.workspace.getConfiguration(SECTION)),
      outputChannel: this.output,
      middleware: {
        // The server offers classic completion too, for editors without ghost text. Here it
        // would run the model a second time for nearly every keystroke (the suggestion list
        // is asked for as you type, and that request cannot be told apart from Ctrl+Space),
        // so it is forwarded only when the user opted in.
        provideCompletionItem: (document, position, context, token, next) =>
          vscode.workspace.getConfiguration(SECTION).get<boolean>('popupCompletions', false)
            ? next(document, position, context, token)
            : undefined,
        handleWorkDoneProgress: (token, params, next) => {
          const id = String(token);
          if (params.kind === 'begin') {
            this.tracker.handle(optional({ type: 'progressBegin', token: id, title: params.title }, params));
          } else if (params.kind === 'report') {
            this.tracker.handle(optional({ type: 'progressReport', token: id }, params));
          } else {
            this.tracker.handle({ type: 'progressEnd', token: id });
          }
          // The client's own handler shows the progress notification as well.
          next(token, params);
        },
      },
    };
  }

  private onConfigurationChanged(change: vscode.ConfigurationChangeEvent): void {
    const action = actionForChange(change);
    if (action === 'restart') {
      this.output.info('Launch settings changed; restarting the server.');
      void this.restart();
    } else if (action === 'notify' && this.client?.isRunning()) {
      const params = didChangeConfigurationParams(vscode.workspace.getConfiguration(SECTION));
      this.output.info('Settings changed; sending them to the server.');
      this.client.sendNotification(DidChangeConfigurationNotification.type, params).catch((error: unknown) => {
        this.output.error(`Sending the settings failed: ${errorMessage(error)}`);
      });
    }
  }

  private fail(message: string): void {
    this.output.error(message);
    this.tracker.handle({ type: 'startFailed', message });
    void vscode.window.showErrorMessage(withName(message), SHOW_LOG).then((choice) => {
      if (choice === SHOW_LOG) {
        this.output.show(true);
      }
    });
  }
}

function readLaunchSettings(): LaunchSettings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return {
    serverCommand: userValue<string[] | string>(config, 'serverCommand'),
    pythonPath: userValue<string>(config, 'pythonPath'),
    serverEnv: userValue<Record<string, unknown>>(config, 'serverEnv'),
  };
}

function serverOptions(launch: ServerLaunch): ServerOptions {
  // stdio is the client's default transport for an executable, and the server's default too.
  return { command: launch.command, args: launch.args, options: { env: launch.env, cwd: launch.cwd } };
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function describe(launch: ServerLaunch): string {
  return [launch.command, ...launch.args].map((arg) => (/\s/.test(arg) ? JSON.stringify(arg) : arg)).join(' ');
}

/** Names the source of a notification, unless the server's message already does. */
function withName(message: string): string {
  return message.startsWith(CLIENT_NAME) ? message : `${CLIENT_NAME}: ${message}`;
}

/** The message without a leading "CodeGeeX2: ", for places that name the source already. */
function withoutName(message: string): string {
  return message.startsWith(`${CLIENT_NAME}: `) ? message.slice(CLIENT_NAME.length + 2) : message;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// Copies `message` and `percentage` only when present (`exactOptionalPropertyTypes`).
function optional<T extends object>(base: T, params: { message?: string; percentage?: number }): T {
  const result: T & { message?: string; percentage?: number } = { ...base };
  if (params.message !== undefined) {
    result.message = params.message;
  }
  if (params.percentage !== undefined) {
    result.percentage = params.percentage;
  }
  return result;
}
