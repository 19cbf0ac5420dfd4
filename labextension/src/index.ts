/**
 * jupyter-secure-storage for JupyterLab 4 and Notebook 7: a Secrets sidebar and a status
 * bar item over the server's secure store, an unlock dialog and Lock / Unlock commands
 * for the vault held by the server's unlock agent, notebook access grants, and a storage
 * connector for jupyter-secrets-manager (used only when that extension is installed).
 *
 * The plugins share one StoreState (the last `GET status`) and one UnlockController.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ISecretsManager } from 'jupyter-secrets-manager';

import { setLockedHandler } from './api';
import { SecureStorageConnector } from './connector';
import { keyIcon, lockedIcon, unlockedIcon } from './icon';
import { SecretsPanel } from './panel';
import { storeState } from './state';
import { StoreStatusItem } from './status';
import { UnlockController } from './unlock';

const OPEN_COMMAND = 'secure-storage:open-sidebar';
const UNLOCK_COMMAND = 'secure-storage:unlock';
const LOCK_COMMAND = 'secure-storage:lock';

const unlocker = new UnlockController(storeState);

/** The unlock dialog, opened by a locked refusal of any request, and the commands. */
const unlock: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-secure-storage:unlock',
  description: 'The vault unlock dialog and the Lock / Unlock commands.',
  autoStart: true,
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    setLockedHandler(() => void unlocker.prompt(false));
    app.commands.addCommand(UNLOCK_COMMAND, {
      label: 'Secure storage: Unlock',
      caption: 'Unlock the vault with its passphrase, for every kernel of this server',
      icon: unlockedIcon,
      execute: () => unlocker.prompt(true)
    });
    app.commands.addCommand(LOCK_COMMAND, {
      label: 'Secure storage: Lock',
      caption: 'Lock the vault: the unlock agent forgets its key',
      icon: lockedIcon,
      execute: () => unlocker.lock()
    });
    palette?.addItem({ command: UNLOCK_COMMAND, category: 'Secrets' });
    palette?.addItem({ command: LOCK_COMMAND, category: 'Secrets' });
    storeState.startPolling();
  }
};

const sidebar: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-secure-storage:sidebar',
  description: 'The Secrets sidebar: names in the secure store, add and delete, grants.',
  autoStart: true,
  optional: [ICommandPalette, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null
  ) => {
    const panel = new SecretsPanel(storeState, unlocker, notebooks);
    app.shell.add(panel, 'left', { rank: 850 });
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Secrets',
      icon: keyIcon,
      execute: () => {
        app.shell.activateById(panel.id);
        return panel.refresh();
      }
    });
    palette?.addItem({ command: OPEN_COMMAND, category: 'Secrets' });
  }
};

const statusItem: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-secure-storage:status',
  description: 'A status bar item: the backend, locked or unlocked, the save check.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return; // Notebook 7's pages have no status bar
    }
    const item = new StoreStatusItem(storeState, {
      open: () => void app.commands.execute(OPEN_COMMAND),
      unlock: () => void unlocker.prompt(true)
    });
    statusBar.registerStatusItem('jupyter-secure-storage:status', {
      item,
      align: 'left',
      rank: 900
    });
    storeState.startPolling();
  }
};

/**
 * Keeps jupyter-secrets-manager's secrets in the secure store. The manager's in-memory
 * connector (jupyter-secrets-manager:connector) is disabled by this package's
 * package.json, since a manager given two connectors locks itself.
 */
const connector: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-secure-storage:connector',
  description: 'A jupyter-secrets-manager connector backed by the secure store.',
  autoStart: true,
  optional: [ISecretsManager],
  activate: (app: JupyterFrontEnd, manager: ISecretsManager | null) => {
    manager?.setConnector(new SecureStorageConnector());
  }
};

export default [unlock, sidebar, statusItem, connector];
