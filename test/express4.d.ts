// The Express 4 copy installed under the alias `express4`, typed with Express 5's types: the
// tests use only the API both versions share.
declare module 'express4' {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the one way to re-export an `export =` module in an ambient declaration
  import express = require('express');
  export = express;
}
