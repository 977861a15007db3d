// quiet.mjs - imported before @supabase/supabase-js: supabase-js warns once per process
// that Node 20 is deprecated; the warning is about the runtime, not about jobwire, and
// would bury the test output. Every other warning passes through.
const warn = console.warn;
console.warn = (...args) => {
  if (typeof args[0] === 'string' && args[0].includes('Node.js 20 and below are deprecated')) return;
  warn(...args);
};
