/**
 * The Secrets sidebar: names in the server's secure store grouped by namespace, a form
 * to add one, and a delete button per key. Values go one way only, from the password
 * field into a POST: the field is emptied as soon as its value is read, and nothing on
 * the page (widget state, DOM, storage) holds a value afterwards.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { deleteIcon, refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import {
  IStoredKey,
  StorageRequestError,
  addKey,
  deleteKey,
  getStatus,
  listKeys
} from './api';
import { keyIcon } from './icon';

const DEFAULT_NAMESPACE = 'default';

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

export class SecretsPanel extends Widget {
  constructor() {
    super();
    this.id = 'jupyter-secure-storage-sidebar';
    this.addClass('jp-SecureStorage-panel');
    this.title.icon = keyIcon;
    this.title.caption = 'Secrets';

    const header = element('div', 'jp-SecureStorage-header');
    header.append(element('h2', 'jp-SecureStorage-title', 'Secrets'));
    const refresh = element('button', 'jp-SecureStorage-iconButton jp-SecureStorage-refresh');
    refresh.type = 'button';
    refresh.title = 'Refresh';
    refresh.setAttribute('aria-label', 'Refresh');
    refresh.append(refreshIcon.element({ tag: 'span' }));
    refresh.addEventListener('click', () => void this.refresh());
    header.append(refresh);

    this._backend = element('div', 'jp-SecureStorage-backend');
    this._error = element('div', 'jp-SecureStorage-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    this._list = element('div', 'jp-SecureStorage-list');

    this.node.append(header, this._backend, this._error, this._addForm(), this._list);
  }

  /** Ask the server for the backend and the names again. */
  async refresh(): Promise<void> {
    try {
      const [status, keys] = await Promise.all([getStatus(), listKeys()]);
      this._backend.textContent = `${status.backend} · ${status.location}`;
      this._backend.title = status.reason;
      this._renderKeys(keys);
      this._showError(null);
    } catch (error) {
      this._showError(error);
    }
  }

  protected override onAfterShow(): void {
    void this.refresh();
  }

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
        .catch(error => this._showError(error))
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

  private _showError(error: unknown): void {
    if (error === null) {
      this._error.hidden = true;
      this._error.replaceChildren();
      return;
    }
    const message =
      error instanceof Error ? error.message : 'The request failed for an unknown reason.';
    const remedy = error instanceof StorageRequestError ? error.remedy : '';
    this._error.replaceChildren(element('div', 'jp-SecureStorage-errorMessage', message));
    if (remedy) {
      this._error.append(element('div', 'jp-SecureStorage-errorRemedy', remedy));
    }
    this._error.hidden = false;
  }

  private _backend: HTMLDivElement;
  private _error: HTMLDivElement;
  private _list: HTMLDivElement;
}
