// What the status bar item says: a small state machine fed by client and server events.
//
// Pure: no `vscode` import, so the unit tests run on plain Node. `extension.ts` turns a
// `StatusView` into the real status bar item.

export type Status =
  | { kind: 'stopped' }
  | { kind: 'starting' }
  | { kind: 'loading'; title: string; message?: string; percentage?: number }
  | { kind: 'ready' }
  | { kind: 'error'; message: string };

export type StatusEvent =
  /** The client is starting the server process. */
  | { type: 'starting' }
  /** The server answered `initialize`. */
  | { type: 'running' }
  /** The client was stopped on purpose (restart, deactivate). */
  | { type: 'stopped' }
  /** The server process went away without being asked to. */
  | { type: 'crashed'; message: string }
  /** The server could not be started or found. */
  | { type: 'startFailed'; message: string }
  | { type: 'progressBegin'; token: string; title: string; message?: string; percentage?: number }
  | { type: 'progressReport'; token: string; message?: string; percentage?: number }
  | { type: 'progressEnd'; token: string; message?: string }
  /** `window/showMessage` with type Error: the server's way of saying the model failed to load. */
  | { type: 'serverError'; message: string };

export const INITIAL_STATUS: Status = { kind: 'stopped' };

/**
 * The next status. Rules that are not obvious:
 * - `running` keeps `starting`: the server loads the model right after `initialized`, so it is
 *   not ready until that progress ends.
 * - An error stays until something new starts (a restart, or a new load after a settings
 *   change); the end of the failed load's progress must not turn it into `ready`.
 * - Progress for a token other than the one being shown is ignored, so a stray report cannot
 *   move the display backwards.
 */
export function nextStatus(status: Status, event: StatusEvent, activeToken?: string): Status {
  switch (event.type) {
    case 'starting':
      return { kind: 'starting' };
    case 'running':
      return status.kind === 'stopped' ? { kind: 'starting' } : status;
    case 'stopped':
      return { kind: 'stopped' };
    case 'crashed':
    case 'startFailed':
    case 'serverError':
      return { kind: 'error', message: event.message };
    case 'progressBegin':
      return withOptional({ kind: 'loading', title: event.title }, event.message, event.percentage);
    case 'progressReport':
      if (status.kind !== 'loading' || (activeToken !== undefined && activeToken !== event.token)) {
        return status;
      }
      return withOptional(
        { kind: 'loading', title: status.title },
        event.message ?? status.message,
        event.percentage ?? status.percentage,
      );
    case 'progressEnd':
      if (status.kind === 'error' || (activeToken !== undefined && activeToken !== event.token)) {
        return status;
      }
      return { kind: 'ready' };
  }
}

// `exactOptionalPropertyTypes` forbids `message: undefined`; leave absent fields out instead.
function withOptional(
  base: { kind: 'loading'; title: string },
  message: string | undefined,
  percentage: number | undefined,
): Status {
  const status: { kind: 'loading'; title: string; message?: string; percentage?: number } = { ...base };
  if (message !== undefined) {
    status.message = message;
  }
  if (percentage !== undefined) {
    status.percentage = percentage;
  }
  return status;
}

/** A status machine that remembers which progress token it is showing. */
export class StatusTracker {
  private current: Status = INITIAL_STATUS;
  private activeToken: string | undefined;

  constructor(private readonly onChange: (status: Status) => void = () => undefined) {}

  get status(): Status {
    return this.current;
  }

  handle(event: StatusEvent): Status {
    const next = nextStatus(this.current, event, this.activeToken);
    if (event.type === 'progressBegin') {
      this.activeToken = event.token;
    } else if (event.type === 'progressEnd' && event.token === this.activeToken) {
      this.activeToken = undefined;
    } else if (event.type === 'starting' || event.type === 'stopped') {
      this.activeToken = undefined;
    }
    if (!sameStatus(next, this.current)) {
      this.current = next;
      this.onChange(next);
    }
    return this.current;
  }
}

function sameStatus(a: Status, b: Status): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** What the status bar item shows; `command` is always the log, whatever the state. */
export interface StatusView {
  text: string;
  tooltip: string;
  /** Theme colour id for the background, for states that need attention. */
  background?: 'statusBarItem.errorBackground' | 'statusBarItem.warningBackground';
}

const NAME = 'CodeGeeX2';

/** One line for the log. */
export function describeStatus(status: Status): string {
  switch (status.kind) {
    case 'loading':
      return `loading (${loadingDetail(status)})`;
    case 'error':
      return `error (${status.message})`;
    default:
      return status.kind;
  }
}

function tooltip(detail: string): string {
  return `${NAME}: ${detail}\nClick for the menu.`;
}

// A progress title that is just our name (a common choice) would repeat the tooltip's prefix.
function loadingDetail(status: { title: string; message?: string }): string {
  const parts = [status.title, status.message].filter(
    (part): part is string => part !== undefined && part !== '' && part.toLowerCase() !== NAME.toLowerCase(),
  );
  return parts.length === 0 ? 'loading the model' : parts.join(': ');
}

export function statusView(status: Status): StatusView {
  switch (status.kind) {
    case 'stopped':
      return { text: `$(circle-slash) ${NAME}`, tooltip: tooltip('server stopped') };
    case 'starting':
      return { text: `$(loading~spin) ${NAME}`, tooltip: tooltip('starting the server') };
    case 'loading': {
      const pct = status.percentage === undefined ? '' : ` ${Math.round(status.percentage)}%`;
      return { text: `$(loading~spin) ${NAME}${pct}`, tooltip: tooltip(loadingDetail(status)) };
    }
    case 'ready':
      return { text: `$(check) ${NAME}`, tooltip: tooltip('ready') };
    case 'error':
      return {
        text: `$(error) ${NAME}`,
        tooltip: tooltip(status.message),
        background: 'statusBarItem.errorBackground',
      };
  }
}
