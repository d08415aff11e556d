# @musistudio/claude-code-router 1.0.73 with its npm dependencies, from the
# lock file beside this file (package-lock.json: every package with its
# registry URL and integrity, made by
# `npm install --package-lock-only --omit-lockfile-registry-resolved=false`).
# Run as `node $out/node_modules/@musistudio/claude-code-router/dist/cli.js start`.
# 1.0.x runs on Node 20+; 3.x would need Node 22 and a native sqlite module.
{
  importNpmLock,
  nodejs_22,
}:
importNpmLock.buildNodeModules {
  npmRoot = ./.;
  nodejs = nodejs_22;
}
