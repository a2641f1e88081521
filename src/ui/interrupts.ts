// Ctrl-C and `q`: how a reporter turns key presses and signals into a request to stop.
import type { ReporterOptions } from './types.js';

/**
 * First Ctrl-C (or `q` on the dashboard) asks the loop to stop after the current step; a second Ctrl-C quits
 * at once with 130, so a stuck run can always be left. `beforeExit` restores whatever needs restoring.
 */
export class Interrupts {
  private asked = false;
  constructor(private readonly onInterrupt: ReporterOptions['onInterrupt'], private readonly beforeExit = (): void => {}) {}

  get stopping(): boolean {
    return this.asked;
  }

  /** Returns true when this press is the one that asked the loop to stop. */
  press(how: 'q' | 'SIGINT'): boolean {
    if (!this.asked) {
      this.asked = true;
      this.onInterrupt(how);
      return true;
    }
    if (how === 'SIGINT') {
      this.beforeExit();
      process.stderr.write('mnist-par: quit by a second Ctrl-C: the step in progress was not saved; the last checkpoint is as it was\n');
      process.exit(130);
    }
    return false;
  }
}
