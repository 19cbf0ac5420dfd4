/**
 * The Secrets sidebar: names in the server's secure store grouped by namespace, a form
 * to add one, a delete button per key, Lock / Unlock in the header, and, while a
 * notebook is the current one, which keys that notebook may read (a toggle per key, as
 * in Google Colab's key panel) and the latest requests for keys.
 *
 * Values go one way only, from the password field into a POST: the field is emptied as
 * soon as its value is read, and nothing on the page (widget state, DOM, storage) holds
 * a value afterwards.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { deleteIcon, refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import {
  IAccessEntry,
  IGrant,
  IStoreStatus,
  IStoredKey,
  StorageRequestError,
  accessLog,
  addKey,
  deleteKey,
  listGrants,
  listKeys,
  setGrant
} from './api';
import { keyIcon, lockedIcon, unlockedIcon } from './icon';
import { StoreState } from './state';
import { UnlockController } from './unlock';

const DEFAULT_NAMESPACE = 'default';
const ACCESS_LOG_LENGTH = 20;

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text; // never innerHTML: names are arbitrary text
  }
  return node;
}

function whenModified(modified: string | null): string {
  if (!modified) {
    return 'modified: unknown';
  }
  const date = new Date(modified);
  return Number.isNaN(date.getTime()) ? modified : `modified ${date.toLocaleString()}`;
}

/** A refusal's cause and remedy, as a block of the panel. */
function errorBlock(error: unknown): HTMLDivElement {
  const block = element('div', 'jp-SecureStorage-error');
  block.setAttribute('role', 'alert');
  const message =
    error instanceof Error ? error.message : 'The request failed for an unknown reason.';
  block.append(element('div', 'jp-SecureStorage-errorMessage', message));
  const remedy = error instanceof StorageRequestError ? error.remedy : '';
  if (remedy) {
    block.append(element('div', 'jp-SecureStorage-errorRemedy', remedy));
  }
  return block;
}

function isLocked(error: unknown): boolean {
  return error instanceof StorageRequestError && error.locked;
}

export class SecretsPanel extends Widget {
  constructor(
    private readonly _state: StoreState,
    private readonly _unlocker: UnlockController,
    private readonly _notebooks: INotebookTracker | null
  ) {
    super();
    this.id = 'jupyter-secure-storage-sidebar';
    this.addClass('jp-SecureStorage-panel');
    this.title.icon = keyIcon;
    this.title.caption = 'Secrets';

    const header = element('div', 'jp-SecureStorage-header');
    header.append(element('h2', 'jp-SecureStorage-title', 'Secrets'));
    const actions = element('div', 'jp-SecureStorage-actions');
    this._lockButton = this._textButton('jp-SecureStorage-lock', 'Lock', lockedIcon);
    this._lockButton.title = 'Lock the vault: the unlock agent forgets its key';
    this._lockButton.addEventListener('click', () => void this._lock());
    this._unlockButton = this._textButton('jp-SecureStorage-unlock', 'Unlock', unlockedIcon);
    this._unlockButton.title = 'Unlock the vault with its passphrase';
    this._unlockButton.addEventListener('click', () => void this._unlock());
    this._lockButton.hidden = this._unlockButton.hidden = true;
    const refresh = element('button', 'jp-SecureStorage-iconButton jp-SecureStorage-refresh');
    refresh.type = 'button';
    refresh.title = 'Refresh';
    refresh.setAttribute('aria-label', 'Refresh');
    refresh.append(refreshIcon.element({ tag: 'span' }));
    refresh.addEventListener('click', () => void this.refresh());
    actions.append(this._lockButton, this._unlockButton, refresh);
    header.append(actions);

    this._backend = element('div', 'jp-SecureStorage-backend');
    this._error = element('div', 'jp-SecureStorage-errorArea');
    this._list = element('div', 'jp-SecureStorage-list');
    this._access = element('section', 'jp-SecureStorage-access');
    this._access.hidden = true;
    this._log = element('section', 'jp-SecureStorage-log');

    this.node.append(
      header,
      this._backend,
      this._error,
      this._addForm(),
      this._list,
      this._access,
      this._log
    );

    this._state.changed.connect(this._onStatus, this);
    this._notebooks?.currentChanged.connect(this._onNotebook, this);
    this._onNotebook();
  }

  override dispose(): void {
    this._state.changed.disconnect(this._onStatus, this);
    this._notebooks?.currentChanged.disconnect(this._onNotebook, this);
    super.dispose();
  }

  /** Ask the server for the state, the names, the grants and the access log again. */
  async refresh(): Promise<void> {
    const [, keys] = await Promise.all([
      this._state.refresh(),
      listKeys().then(
        found => found,
        (error: unknown) => error
      )
    ]);
    if (Array.isArray(keys)) {
      this._keys = keys;
      this._renderKeys(keys);
      this._showError(null);
    } else {
      this._keys = null;
      this._list.replaceChildren();
      if (isLocked(keys)) {
        this._showLocked(keys);
      } else {
        this._showError(keys);
      }
    }
    await Promise.all([this._renderAccess(), this._renderLog()]);
  }

  protected override onAfterShow(): void {
    void this.refresh();
  }

  // --- the header ------------------------------------------------------------------------

  private _textButton(
    className: string,
    label: string,
    icon: typeof lockedIcon
  ): HTMLButtonElement {
    const button = element('button', `jp-SecureStorage-textButton ${className}`);
    button.type = 'button';
    button.append(icon.element({ tag: 'span' }), element('span', '', label));
    return button;
  }

  private _onStatus(_: StoreState, status: IStoreStatus | null): void {
    const lockable = status !== null && status.backend === 'vault' && status.agent;
    this._lockButton.hidden = !lockable || status.locked;
    this._unlockButton.hidden = !lockable || !status.locked;
    if (status === null) {
      this._backend.textContent = 'The server did not answer.';
      this._backend.title = this._state.error?.message ?? '';
      return;
    }
    const state = status.backend === 'vault' ? ` · ${status.locked ? 'locked' : 'unlocked'}` : '';
    this._backend.textContent = `${status.backend} · ${status.location}${state}`;
    this._backend.title = status.reason;
    const flipped = this._wasLocked !== null && this._wasLocked !== status.locked;
    this._wasLocked = status.locked;
    if (flipped && status.locked) {
      // Locked (here, elsewhere, or by the agent's idle lock): no request, so no dialog
      // opens unasked; the notice offers Unlock.
      this._keys = null;
      this._list.replaceChildren();
      this._showLocked(null);
      void this._renderAccess();
    } else if (flipped && this.isVisible) {
      void this.refresh(); // unlocked elsewhere: the names are there again
    }
  }

  private async _unlock(): Promise<void> {
    if (await this._unlocker.prompt(true)) {
      await this.refresh();
    }
  }

  private async _lock(): Promise<void> {
    try {
      await this._unlocker.lock();
    } catch (error) {
      this._showError(error);
      return;
    }
    await this.refresh();
  }

  // --- the add form and the names ----------------------------------------------------------

  private _addForm(): HTMLFormElement {
    const form = element('form', 'jp-SecureStorage-add');
    form.autocomplete = 'off';
    form.append(element('h3', 'jp-SecureStorage-formTitle', 'Add a secret'));

    const field = (label: string, input: HTMLInputElement): HTMLLabelElement => {
      const wrapper = element('label', 'jp-SecureStorage-field');
      wrapper.append(element('span', 'jp-SecureStorage-label', label), input);
      return wrapper;
    };
    const namespace = element('input', 'jp-mod-styled jp-SecureStorage-namespace');
    namespace.name = 'namespace';
    namespace.value = DEFAULT_NAMESPACE;
    namespace.spellcheck = false;
    const name = element('input', 'jp-mod-styled jp-SecureStorage-name');
    name.name = 'name';
    name.placeholder = 'OPENAI_API_KEY';
    name.required = true;
    name.spellcheck = false;
    const value = element('input', 'jp-mod-styled jp-SecureStorage-value');
    value.type = 'password';
    value.name = 'value';
    value.placeholder = 'never shown again';
    value.autocomplete = 'new-password'; // no browser password manager offer or fill
    value.spellcheck = false;
    const submit = element('button', 'jp-mod-styled jp-mod-accept jp-SecureStorage-submit');
    submit.type = 'submit';
    submit.textContent = 'Add';

    form.append(
      field('Namespace', namespace),
      field('Name', name),
      field('Value', value),
      submit
    );
    form.addEventListener('submit', event => {
      event.preventDefault();
      // Read the value and empty the field at once, whatever the server answers: the
      // value then lives only in this call until the request is sent.
      const target = namespace.value.trim() || DEFAULT_NAMESPACE;
      const request = addKey(target, name.value, value.value); // serialized synchronously
      value.value = '';
      submit.disabled = true;
      request
        .then(async () => {
          name.value = '';
          this._showError(null);
          await this.refresh();
        })
        .catch(error => {
          if (isLocked(error)) {
            this._showLocked(error);
          } else {
            this._showError(error);
          }
        })
        .finally(() => {
          submit.disabled = false;
        });
    });
    return form;
  }

  private _renderKeys(keys: IStoredKey[]): void {
    const byNamespace = new Map<string, IStoredKey[]>();
    for (const key of keys) {
      const group = byNamespace.get(key.namespace) ?? [];
      group.push(key);
      byNamespace.set(key.namespace, group);
    }
    const sections: HTMLElement[] = [];
    for (const [namespace, group] of byNamespace) {
      const section = element('section', 'jp-SecureStorage-namespaceGroup');
      section.dataset.namespace = namespace;
      section.append(element('h3', 'jp-SecureStorage-namespaceTitle', namespace));
      const list = element('ul', 'jp-SecureStorage-keys');
      if (group.length === 0) {
        list.append(element('li', 'jp-SecureStorage-empty', 'No secrets here yet.'));
      }
      for (const key of group) {
        list.append(this._keyItem(key));
      }
      section.append(list);
      sections.push(section);
    }
    if (sections.length === 0) {
      sections.push(element('p', 'jp-SecureStorage-empty', 'No secrets stored yet.'));
    }
    this._list.replaceChildren(...sections);
  }

  private _keyItem(key: IStoredKey): HTMLLIElement {
    const item = element('li', 'jp-SecureStorage-key');
    item.dataset.name = key.name;
    const text = element('div', 'jp-SecureStorage-keyText');
    text.append(
      element('span', 'jp-SecureStorage-keyName', key.name),
      element(
        'span',
        'jp-SecureStorage-keyMeta',
        `${key.backend} · ${whenModified(key.modified)}`
      )
    );
    const remove = element('button', 'jp-SecureStorage-iconButton jp-SecureStorage-delete');
    remove.type = 'button';
    remove.title = `Delete ${key.name}`;
    remove.setAttribute('aria-label', `Delete ${key.name}`);
    remove.append(deleteIcon.element({ tag: 'span' }));
    remove.addEventListener('click', () => void this._confirmDelete(key));
    item.append(text, remove);
    return item;
  }

  private async _confirmDelete(key: IStoredKey): Promise<void> {
    const answer = await showDialog({
      title: 'Delete secret',
      body: `Delete "${key.name}" from namespace "${key.namespace}" (${key.backend})? This cannot be undone.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await deleteKey(key.namespace, key.name);
      await this.refresh();
    } catch (error) {
      this._showError(error);
    }
  }

  // --- notebook access and the access log --------------------------------------------------

  private _onNotebook(): void {
    const current = this._notebooks?.currentWidget ?? null;
    if (current === this._notebook) {
      return;
    }
    this._notebook?.sessionContext.propertyChanged.disconnect(this._onNotebookPath, this);
    this._notebook = current;
    this._notebook?.sessionContext.propertyChanged.connect(this._onNotebookPath, this);
    void this._renderAccess();
  }

  private _onNotebookPath(_: unknown, property: string): void {
    if (property === 'path') {
      void this._renderAccess();
    }
  }

  /** The current notebook's path as its session names it (relative to the server's
   * root), or null. */
  private get _notebookPath(): string | null {
    const notebook = this._notebook;
    if (!notebook || notebook.isDisposed) {
      return null;
    }
    return notebook.sessionContext.path || notebook.context.localPath || null;
  }

  private async _renderAccess(): Promise<void> {
    const path = this._notebookPath;
    if (path === null) {
      this._access.hidden = true;
      this._access.replaceChildren();
      return;
    }
    const title = element('h3', 'jp-SecureStorage-sectionTitle', 'Notebook access');
    const which = element('div', 'jp-SecureStorage-notebookPath', path);
    which.title = 'Kernels of this notebook read only the keys switched on here';
    this._access.dataset.notebook = path;
    this._access.hidden = false;
    if (this._keys === null) {
      const hint = this._state.locked
        ? 'Unlock the store to see its keys.'
        : 'The keys are not listed yet: refresh the panel.';
      this._access.replaceChildren(title, which, element('p', 'jp-SecureStorage-empty', hint));
      return;
    }
    let grants: IGrant[];
    try {
      grants = await listGrants(path);
    } catch (error) {
      if (this._notebookPath === path) {
        this._access.replaceChildren(title, which, errorBlock(error));
      }
      return;
    }
    if (this._notebookPath !== path) {
      return; // another notebook became current meanwhile
    }
    const granted = new Set(grants.map(grant => `${grant.namespace}\u0000${grant.key}`));
    const list = element('ul', 'jp-SecureStorage-grants');
    for (const key of this._keys) {
      list.append(this._grantItem(path, key, granted.has(`${key.namespace}\u0000${key.name}`)));
    }
    if (this._keys.length === 0) {
      list.append(element('li', 'jp-SecureStorage-empty', 'No secrets stored yet.'));
    }
    this._access.replaceChildren(title, which, list);
  }

  private _grantItem(notebook: string, key: IStoredKey, granted: boolean): HTMLLIElement {
    const item = element('li', 'jp-SecureStorage-grant');
    item.dataset.namespace = key.namespace;
    item.dataset.name = key.name;
    const label = element('label', 'jp-SecureStorage-grantLabel');
    const toggle = element('input', 'jp-SecureStorage-toggle');
    toggle.type = 'checkbox';
    toggle.setAttribute('role', 'switch');
    toggle.checked = granted;
    toggle.setAttribute('aria-label', `Let ${notebook} read ${key.namespace}/${key.name}`);
    const name = element('span', 'jp-SecureStorage-keyName', key.name);
    const namespace = element('span', 'jp-SecureStorage-keyMeta', key.namespace);
    const text = element('span', 'jp-SecureStorage-keyText');
    text.append(name, namespace);
    label.append(text, toggle);
    item.append(label);
    toggle.addEventListener('change', () => {
      const wanted = toggle.checked;
      toggle.disabled = true;
      setGrant(notebook, key.namespace, key.name, wanted)
        .then(() => this._renderAccess())
        .catch(error => {
          toggle.checked = !wanted;
          this._showError(error);
        })
        .finally(() => {
          toggle.disabled = false;
        });
    });
    return item;
  }

  private async _renderLog(): Promise<void> {
    const title = element('h3', 'jp-SecureStorage-sectionTitle', 'Access log');
    let entries: IAccessEntry[];
    try {
      entries = await accessLog(ACCESS_LOG_LENGTH);
    } catch (error) {
      this._log.replaceChildren(title, errorBlock(error));
      return;
    }
    const list = element('ol', 'jp-SecureStorage-logEntries');
    for (const entry of entries) {
      const item = element(
        'li',
        `jp-SecureStorage-logEntry ${entry.allowed ? 'jp-mod-allowed' : 'jp-mod-refused'}`
      );
      item.dataset.notebook = entry.notebook;
      item.dataset.name = entry.key;
      const when = new Date(entry.time * 1000);
      item.append(
        element('span', 'jp-SecureStorage-logVerdict', entry.allowed ? 'allowed' : 'refused'),
        element('span', 'jp-SecureStorage-keyName', `${entry.namespace}/${entry.key}`),
        element('span', 'jp-SecureStorage-logNotebook', entry.notebook),
        element('span', 'jp-SecureStorage-keyMeta', when.toLocaleString())
      );
      list.append(item);
    }
    if (entries.length === 0) {
      list.append(element('li', 'jp-SecureStorage-empty', 'No kernel has asked for a key yet.'));
    }
    this._log.replaceChildren(title, list);
  }

  // --- errors ------------------------------------------------------------------------------

  private _showLocked(error: unknown): void {
    const notice = element('div', 'jp-SecureStorage-locked');
    notice.append(element('p', '', 'The vault is locked: unlock it to list and add secrets.'));
    const button = this._textButton('jp-SecureStorage-unlock', 'Unlock', unlockedIcon);
    button.addEventListener('click', () => void this._unlock());
    notice.append(button);
    if (error instanceof Error) {
      notice.title = error.message;
    }
    this._error.replaceChildren(notice);
  }

  private _showError(error: unknown): void {
    if (error === null) {
      this._error.replaceChildren();
      return;
    }
    this._error.replaceChildren(errorBlock(error));
  }

  private _backend: HTMLDivElement;
  private _error: HTMLDivElement;
  private _list: HTMLDivElement;
  private _access: HTMLElement;
  private _log: HTMLElement;
  private _lockButton: HTMLButtonElement;
  private _unlockButton: HTMLButtonElement;
  private _keys: IStoredKey[] | null = null;
  private _notebook: NotebookPanel | null = null;
  private _wasLocked: boolean | null = null;
}
