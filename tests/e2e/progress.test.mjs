// The progress bar's time-left text (web/progress.js), without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duration } from '../../web/progress.js';

test('times left read as seconds, minutes and seconds, or hours and minutes', () => {
  assert.equal(duration(42.4), '42 s');
  assert.equal(duration(185), '3 min 5 s');
  assert.equal(duration(3599), '59 min 59 s');
  // The page once said "595 min 17 s left" for a full WikiText-2 evaluation on SwiftShader.
  assert.equal(duration(595 * 60 + 17), '9 h 55 min');
  assert.equal(duration(-3), '0 s');
});
