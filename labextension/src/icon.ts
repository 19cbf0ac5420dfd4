/** The icons of the Secrets sidebar and its status bar item: a key, and a padlock shut
 * (locked) or open (unlocked). */
import { LabIcon } from '@jupyterlab/ui-components';

const KEY_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.65-4A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4H12.65z"/>
</svg>`;

const LOCKED_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm-3 8V7a3 3 0 0 1 6 0v3H9zm3 4a2 2 0 0 1 1 3.73V19h-2v-1.27A2 2 0 0 1 12 14z"/>
</svg>`;

const UNLOCKED_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 2a5 5 0 0 0-5 5h2a3 3 0 0 1 6 0v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm0 12a2 2 0 0 1 1 3.73V19h-2v-1.27A2 2 0 0 1 12 14z"/>
</svg>`;

export const keyIcon = new LabIcon({
  name: 'jupyter-secure-storage:key',
  svgstr: KEY_SVG
});

export const lockedIcon = new LabIcon({
  name: 'jupyter-secure-storage:locked',
  svgstr: LOCKED_SVG
});

export const unlockedIcon = new LabIcon({
  name: 'jupyter-secure-storage:unlocked',
  svgstr: UNLOCKED_SVG
});
