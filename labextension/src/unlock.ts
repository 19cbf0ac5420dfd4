/**
 * The unlock dialog: the vault's passphrase goes from a password field into one
 * `POST unlock` to the server's unlock agent, and nowhere else. The fields are emptied
 * the moment they are read (and when the dialog closes any other way); the passphrase is
 * never kept in state, storage or the DOM. With no vault yet, the dialog creates one and
 * asks twice (compared here, sent once).
 *
 * It opens on a refusal that says the vault is locked (any request of this extension),
 * from the sidebar's Unlock button, the status bar item, and the command palette. A
 * refusal opens it on its own only until the person cancels it or locks the vault: from
 * then on only an explicit Unlock does, so it never pops up again and again.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { StorageRequestError, lock, unlock } from './api';
import { StoreState } from './state';

interface IProblem {
  message: string;
  remedy: string;
}

interface IPassphrases {
  passphrase: string;
  repeat: string | null;
}

function passwordField(className: string, label: string): [HTMLLabelElement, HTMLInputElement] {
  const wrapper = document.createElement('label');
  wrapper.className = 'jp-SecureStorage-field';
  const text = document.createElement('span');
  text.className = 'jp-SecureStorage-label';
  text.textContent = label;
  const input = document.createElement('input');
  input.type = 'password';
  input.className = `jp-mod-styled ${className}`;
  input.autocomplete = 'off'; // no password manager offer or fill
  input.spellcheck = false;
  wrapper.append(text, input);
  return [wrapper, input];
}

/** The dialog's body: one password field, or two for a new vault, and the last
 * refusal's cause and remedy. */
class PassphraseBody extends Widget implements Dialog.IBodyWidget<IPassphrases> {
  constructor(create: boolean, location: string, problem: IProblem | null) {
    super();
    this.addClass('jp-SecureStorage-unlockBody');
    const intro = document.createElement('p');
    intro.className = 'jp-SecureStorage-unlockIntro';
    intro.textContent = create
      ? `There is no vault yet. Choose a passphrase (at least 8 characters) for a new vault at ${location}; it unlocks the vault for every kernel of this server.`
      : `The vault at ${location} is locked. Its passphrase unlocks it for every kernel of this server, until it is locked again.`;
    this.node.append(intro);
    if (problem) {
      const error = document.createElement('div');
      error.className = 'jp-SecureStorage-error jp-SecureStorage-unlockError';
      error.setAttribute('role', 'alert');
      const message = document.createElement('div');
      message.className = 'jp-SecureStorage-errorMessage';
      message.textContent = problem.message;
      error.append(message);
      if (problem.remedy) {
        const remedy = document.createElement('div');
        remedy.className = 'jp-SecureStorage-errorRemedy';
        remedy.textContent = problem.remedy;
        error.append(remedy);
      }
      this.node.append(error);
    }
    const [first, passphrase] = passwordField(
      'jp-SecureStorage-passphrase',
      create ? 'New passphrase' : 'Passphrase'
    );
    this._passphrase = passphrase;
    this.node.append(first);
    if (create) {
      const [second, repeat] = passwordField(
        'jp-SecureStorage-passphraseRepeat',
        'Repeat the passphrase'
      );
      this._repeat = repeat;
      this.node.append(second);
    }
  }

  /** The passphrase(s), read once: the fields are empty afterwards. */
  getValue(): IPassphrases {
    const value = {
      passphrase: this._passphrase.value,
      repeat: this._repeat ? this._repeat.value : null
    };
    this._clear();
    return value;
  }

  override dispose(): void {
    this._clear(); // cancelled or closed: nothing typed stays in a detached field either
    super.dispose();
  }

  private _clear(): void {
    this._passphrase.value = '';
    if (this._repeat) {
      this._repeat.value = '';
    }
  }

  private _passphrase: HTMLInputElement;
  private _repeat: HTMLInputElement | null = null;
}

/** Opens the dialog, sends the passphrase, locks; tells `state` to refresh after. */
export class UnlockController {
  constructor(readonly state: StoreState) {}

  /**
   * Ask for the passphrase until the vault unlocks or the person cancels. `explicit`:
   * the person asked (a button, a command); otherwise a refusal did, which opens the
   * dialog only while that is still welcome. Resolves to whether the vault unlocked.
   */
  prompt(explicit: boolean): Promise<boolean> {
    if (explicit) {
      this._automatic = true;
    } else if (!this._automatic) {
      return Promise.resolve(false);
    }
    if (!this._open) {
      this._open = this._ask().finally(() => {
        this._open = null;
      });
    }
    return this._open;
  }

  /** The unlock agent forgets every key; no refusal opens the dialog until an explicit
   * Unlock. */
  async lock(): Promise<void> {
    this._automatic = false;
    try {
      await lock();
    } finally {
      await this.state.refresh();
    }
  }

  private async _ask(): Promise<boolean> {
    let problem: IProblem | null = null;
    for (;;) {
      const status = (await this.state.refresh()) ?? this.state.status;
      if (status && !status.locked) {
        return true; // unlocked meanwhile (another tab, a kernel's prompt, the CLI)
      }
      const create = status ? !status.vault_exists : false;
      const location = status?.location ?? 'the server';
      const result = await showDialog({
        title: create ? 'Create the vault' : 'Unlock the vault',
        body: new PassphraseBody(create, location, problem),
        buttons: [
          Dialog.cancelButton(),
          Dialog.okButton({ label: create ? 'Create' : 'Unlock' })
        ],
        focusNodeSelector: '.jp-SecureStorage-passphrase',
        hasClose: true
      });
      const entered = result.value;
      if (!result.button.accept || !entered) {
        this._automatic = false;
        return false;
      }
      if (create && entered.repeat === '') {
        problem = {
          message: 'Type the passphrase a second time.',
          remedy: 'A new vault needs the passphrase twice, the same both times.'
        };
        continue;
      }
      if (create && entered.passphrase !== entered.repeat) {
        problem = {
          message: 'The two passphrases differ; no vault was created.',
          remedy: 'Type the same passphrase in both fields.'
        };
        continue;
      }
      try {
        await unlock(entered.passphrase);
      } catch (error) {
        problem =
          error instanceof StorageRequestError
            ? { message: error.message, remedy: error.remedy }
            : { message: 'The request failed for an unknown reason.', remedy: '' };
        continue;
      } finally {
        entered.passphrase = '';
        entered.repeat = null;
      }
      this._automatic = true;
      await this.state.refresh();
      return true;
    }
  }

  private _automatic = true;
  private _open: Promise<boolean> | null = null;
}
