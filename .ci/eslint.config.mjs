// ESLint for keygate (run by `npm run lint`, part of `npm test`). It lives in .ci/ to keep the
// repository's top level to the files a user needs; `basePath` points every pattern at the root.
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const root = fileURLToPath(new URL('..', import.meta.url));

export default tseslint.config(
  { basePath: root, ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bench/results/**'] },
  {
    basePath: root,
    files: ['**/*.{ts,mts,cts,js,mjs,cjs}'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setImmediate: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', performance: 'readonly', structuredClone: 'readonly', queueMicrotask: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', globalThis: 'readonly' },
    },
    rules: {
      // Unused bindings named with a leading underscore are deliberate (destructuring a field away).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', caughtErrors: 'none' }],
      // The library reports through process.emitWarning, never the console.
      'no-console': 'error',
    },
  },
  {
    basePath: root,
    files: ['**/*.cjs', 'test/fixtures/**/*'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', __dirname: 'readonly', __filename: 'readonly', exports: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // Tests, examples and benchmarks talk to a terminal.
    basePath: root,
    files: ['test/**/*', 'examples/**/*', 'bench/**/*'],
    rules: { 'no-console': 'off' },
  },
);
