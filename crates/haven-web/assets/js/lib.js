// The vendored libraries (see vendor/VENDOR.md), loaded by index.html as classic scripts so
// that the page needs no inline import map. Preact renders every string as a text node: no
// message text can become markup.
const { h, render, Fragment } = globalThis.preact;
export const { useState, useEffect, useRef, useMemo, useCallback, useLayoutEffect } = globalThis.preactHooks;
export const html = globalThis.htm.bind(h);
export { h, render, Fragment };
