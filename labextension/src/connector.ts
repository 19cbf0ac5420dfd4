/**
 * A jupyter-secrets-manager connector that keeps secrets in the server's secure store
 * (REST: connector/<namespace>/<id>), so keys survive a page reload.
 *
 * The manager names a secret `<namespace>:<id>` and hands fetch() and remove() only that
 * joined id. The server stores the secret under exactly that name (namespace
 * "jupyterlab-secrets"), so splitting the joined id at any colon reaches the same key.
 * This splits at the last one: namespaces are plugin ids, which hold a colon
 * ("@jupyterlite/ai:providers"), and ids rarely do.
 */
import type { ISecret, ISecretsConnector, ISecretsList } from 'jupyter-secrets-manager';

import { requestAPI } from './api';

function split(joined: string): [string, string] {
  const colon = joined.lastIndexOf(':');
  if (colon <= 0 || colon === joined.length - 1) {
    throw new Error(
      'A secrets-manager id is "<namespace>:<id>"; this one has no namespace or no id.'
    );
  }
  return [joined.slice(0, colon), joined.slice(colon + 1)];
}

export class SecureStorageConnector implements ISecretsConnector {
  async fetch(id: string): Promise<ISecret | undefined> {
    const response = await requestAPI(['connector', ...split(id)]);
    if (response.status === 404) {
      return undefined;
    }
    return (await response.json()) as ISecret;
  }

  async save(id: string, secret: ISecret): Promise<void> {
    await requestAPI(['connector', secret.namespace, secret.id], {
      method: 'PUT',
      body: JSON.stringify({ value: secret.value })
    });
  }

  async remove(id: string): Promise<void> {
    await requestAPI(['connector', ...split(id)], { method: 'DELETE' });
  }

  /** Ids as the manager names them (`<namespace>:<id>`), with their values. */
  async list(namespace?: string): Promise<ISecretsList> {
    if (!namespace) {
      return { ids: [], values: [] };
    }
    const response = await requestAPI(['connector', namespace]);
    const { ids } = (await response.json()) as { ids: string[] };
    const joined = ids.map(id => `${namespace}:${id}`);
    const values = await Promise.all(joined.map(id => this.fetch(id)));
    const found = values.flatMap((secret, index) =>
      secret ? [{ id: joined[index], secret }] : []
    );
    return {
      ids: found.map(entry => entry.id as string),
      values: found.map(entry => entry.secret)
    };
  }
}
