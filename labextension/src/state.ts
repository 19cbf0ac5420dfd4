/**
 * What the page knows of the store: the last `GET status` (never a value), shared by the
 * sidebar, the status bar item and the commands, polled every 15 s. Polling asks the
 * server for the state only, which the unlock agent does not count as a use, so a page
 * left open never keeps the vault unlocked.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { IStoreStatus, StorageRequestError, getStatus } from './api';

export const POLL_MS = 15_000;

export class StoreState {
  /** The last status the server gave; null before the first answer or after a failure. */
  get status(): IStoreStatus | null {
    return this._status;
  }

  /** Why the last status request failed (null when it did not). */
  get error(): StorageRequestError | Error | null {
    return this._error;
  }

  /** Whether the vault is locked in the unlock agent (per the last status). */
  get locked(): boolean {
    return this._status?.locked === true;
  }

  /** Emitted after every refresh, with the status (or null after a failure). */
  get changed(): ISignal<this, IStoreStatus | null> {
    return this._changed;
  }

  /** Ask the server again. Never throws: a failure is kept in `error`. */
  async refresh(): Promise<IStoreStatus | null> {
    try {
      this._status = await getStatus();
      this._error = null;
    } catch (error) {
      this._status = null;
      this._error = error instanceof Error ? error : new Error(String(error));
    }
    this._changed.emit(this._status);
    return this._status;
  }

  /** Refresh now and every `ms` while the page is visible. */
  startPolling(ms: number = POLL_MS): void {
    if (this._timer !== null) {
      return;
    }
    void this.refresh();
    this._timer = window.setInterval(() => {
      if (!document.hidden) {
        void this.refresh();
      }
    }, ms);
  }

  private _status: IStoreStatus | null = null;
  private _error: StorageRequestError | Error | null = null;
  private _changed = new Signal<this, IStoreStatus | null>(this);
  private _timer: number | null = null;
}

/** The page's one state, shared by every plugin of this extension. */
export const storeState = new StoreState();
