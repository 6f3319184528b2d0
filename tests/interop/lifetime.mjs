// How every test server here ends: on SIGTERM or SIGINT, or when the test that started it closes
// its standard input (so a test that crashed never leaves a server behind). Open connections are
// closed first; the process exits once its servers have closed, and within a second regardless,
// since the parent may be gone.

export function stopWithParent(...servers) {
  const shutdown = () => {
    let open = servers.length;
    for (const server of servers) {
      server.closeAllConnections?.();
      server.close(() => {
        open -= 1;
        if (open === 0) process.exit(0);
      });
    }
    setTimeout(() => process.exit(0), 1000).unref();
  };
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, shutdown);
  for (const event of ['end', 'close', 'error']) process.stdin.on(event, shutdown);
  process.stdin.resume();
}
