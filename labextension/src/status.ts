/** The status bar item: which backend holds the secrets; a click opens the sidebar. */
import { Widget } from '@lumino/widgets';

import { getStatus } from './api';
import { keyIcon } from './icon';

export class StoreStatusItem extends Widget {
  constructor(open: () => void) {
    super();
    this.addClass('jp-SecureStorage-status');
    this.node.title = 'Secrets: open the sidebar';
    this.node.append(keyIcon.element({ tag: 'span', className: 'jp-SecureStorage-statusIcon' }));
    this._label = document.createElement('span');
    this._label.className = 'jp-SecureStorage-statusLabel';
    this._label.textContent = 'Secrets';
    this.node.append(this._label);
    this.node.addEventListener('click', () => {
      open();
      void this.refresh();
    });
  }

  async refresh(): Promise<void> {
    try {
      const status = await getStatus();
      this._label.textContent = `Secrets: ${status.backend}`;
      this.node.title = `Secrets in ${status.location} (${status.reason}); click to open`;
    } catch (error) {
      this._label.textContent = 'Secrets: unavailable';
      this.node.title = error instanceof Error ? error.message : 'unavailable';
    }
  }

  private _label: HTMLSpanElement;
}
