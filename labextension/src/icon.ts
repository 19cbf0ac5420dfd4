/** The key icon of the Secrets sidebar and its status bar item. */
import { LabIcon } from '@jupyterlab/ui-components';

const KEY_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.65-4A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4H12.65z"/>
</svg>`;

export const keyIcon = new LabIcon({
  name: 'jupyter-secure-storage:key',
  svgstr: KEY_SVG
});
