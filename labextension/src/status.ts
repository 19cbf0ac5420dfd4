/**
 * The status bar item: which backend holds the secrets, whether the vault is locked in
 * the unlock agent, and whether the save guard can check saved files for stored values.
 * It follows the shared StoreState (polled every 15 s and after sidebar actions). A click
 * opens the unlock dialog while locked, else the sidebar.
 */
import { Widget } from '@lumino/widgets';

import { IStoreStatus } from './api';
import { keyIcon, lockedIcon, unlockedIcon } from './icon';
import { StoreState } from './state';

export class StoreStatusItem extends Widget {
  constructor(
    private readonly _state: StoreState,
    actions: { open: () => void; unlock: () => void }
  ) {
    super();
    this.addClass('jp-SecureStorage-status');
    this.node.title = 'Secrets: open the sidebar';
    this._icon = document.createElement('span');
    this._icon.className = 'jp-SecureStorage-statusIcon';
    this._icon.append(keyIcon.element({ tag: 'span' }));
    this._label = document.createElement('span');
    this._label.className = 'jp-SecureStorage-statusLabel';
    this._label.textContent = 'Secrets';
    this.node.append(this._icon, this._label);
    this.node.addEventListener('click', () => {
      if (this._state.locked) {
        actions.unlock();
      } else {
        actions.open();
      }
    });
    this._state.changed.connect(this._render, this);
  }

  override dispose(): void {
    this._state.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(_: StoreState, status: IStoreStatus | null): void {
    if (status === null) {
      this._icon.replaceChildren(keyIcon.element({ tag: 'span' }));
      this._label.textContent = 'Secrets: unavailable';
      this.node.title = this._state.error?.message ?? 'The server did not answer.';
      this.node.dataset.state = 'unavailable';
      return;
    }
    const parts = [`Secrets: ${status.backend}`];
    let icon = keyIcon;
    let state = 'open';
    if (status.backend === 'vault') {
      icon = status.locked ? lockedIcon : unlockedIcon;
      state = status.locked ? 'locked' : 'unlocked';
      parts.push(state);
    }
    if (status.stored_value_check === 'locked') {
      parts.push('stored-value check: locked');
    }
    this._icon.replaceChildren(icon.element({ tag: 'span' }));
    this._label.textContent = parts.join(' · ');
    this.node.dataset.state = state;
    const check = {
      on: 'saved files are checked for stored values',
      locked: 'saved files are checked for token formats (and values known before the lock) only',
      off: 'saved files are not checked for stored values'
    }[status.stored_value_check];
    this.node.title =
      `Secrets in ${status.location} (${status.reason}); ${check}. ` +
      (status.locked ? 'Click to unlock.' : 'Click to open the sidebar.');
  }

  private _icon: HTMLSpanElement;
  private _label: HTMLSpanElement;
}
