/**
 * jupyter-secure-storage for JupyterLab 4 and Notebook 7: a Secrets sidebar and a status
 * bar item over the server's secure store, and a storage connector for
 * jupyter-secrets-manager (used only when that extension is installed).
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ISecretsManager } from 'jupyter-secrets-manager';

import { SecureStorageConnector } from './connector';
import { keyIcon } from './icon';
import { SecretsPanel } from './panel';
import { StoreStatusItem } from './status';

const OPEN_COMMAND = 'secure-storage:open-sidebar';

const sidebar: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-secure-storage:sidebar',
  description: 'The Secrets sidebar: names in the secure store, add and delete.',
  autoStart: true,
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    const panel = new SecretsPanel();
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
  description: 'A status bar item naming the secure store backend.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return; // Notebook 7's pages have no status bar
    }
    const item = new StoreStatusItem(() => void app.commands.execute(OPEN_COMMAND));
    statusBar.registerStatusItem('jupyter-secure-storage:status', {
      item,
      align: 'left',
      rank: 900
    });
    void item.refresh();
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

export default [sidebar, statusItem, connector];
