#!/usr/bin/env bash
# Builds the embedded control plane's binaries from the Go modules pinned under tools/
# into a cache outside the clone, keyed by version, and points $CACHE/bin at them.
# A warm run (every binary already built for its pinned version) builds nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${FLOWRUN_CACHE:-$HOME/.cache/flowrun-operator}
bin="$cache/bin"
mkdir -p "$bin" "$cache/build" "$cache/logs"

command -v go >/dev/null 2>&1 || {
  echo "tools/build.sh: no Go toolchain on PATH; install Go >= 1.26 (https://go.dev/dl) and retry" >&2
  exit 1
}

# Components to build: all by default, or those named on the command line.
wanted=${*:-k8s etcd kwok helm}
want() { [[ " $wanted " == *" $1 "* ]]; }

module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }

# build MODULE_DIR KEY LDFLAGS NAME=PKG...  -> $cache/build/KEY/NAME, linked from $cache/bin/NAME
build() {
  local dir=$1 key=$2 ldflags=$3; shift 3
  local out="$cache/build/$key" log="$cache/logs/build-$key.log" item name pkgs=() missing=()
  for item in "$@"; do
    name=${item%%=*}
    [ -x "$out/$name" ] || { missing+=("$name"); pkgs+=("${item#*=}"); }
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "building $key (${missing[*]}); log: $log"
    local tmp="$out.tmp.$$" start=$SECONDS i
    rm -rf "$tmp"; mkdir -p "$tmp"
    # One go build for all packages of a module shares the compile work between them.
    if ! (cd "$here/$dir" && CGO_ENABLED=0 go build -pgo=off -trimpath -tags notest \
          -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") >"$log" 2>&1; then
      echo "tools/build.sh: building $key failed; see $log" >&2
      tail -n 20 "$log" >&2
      rm -rf "$tmp"; exit 1
    fi
    mkdir -p "$out"
    for i in "${!missing[@]}"; do
      name=$(basename "${pkgs[$i]}")
      # go names a module-root main package after the element before a /vN suffix.
      [[ $name =~ ^v[0-9]+$ ]] && name=$(basename "$(dirname "${pkgs[$i]}")")
      mv "$tmp/$name" "$out/${missing[$i]}"
    done
    rm -rf "$tmp"
    echo "built $key in $((SECONDS - start))s"
  fi
  for item in "$@"; do name=${item%%=*}; ln -sfn "$out/$name" "$bin/$name"; done
}

if want k8s; then
k8s=$(module_version k8s k8s.io/kubernetes)
minor=$(echo "$k8s" | cut -d. -f2)
stamp="k8s.io/component-base/version"
build k8s "k8s-$k8s" "-s -w -X $stamp.gitVersion=$k8s -X $stamp.gitMajor=1 -X $stamp.gitMinor=$minor \
  -X $stamp.gitTreeState=clean -X $stamp.buildDate=2026-01-01T00:00:00Z" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler
fi

if want etcd; then
etcd=$(module_version etcd go.etcd.io/etcd/server/v3)
build etcd "etcd-$etcd" "-s -w" etcd=go.etcd.io/etcd/server/v3
fi

if want kwok; then
kwok=$(module_version kwok sigs.k8s.io/kwok)
build kwok "kwok-$kwok" "-s -w" kwok=sigs.k8s.io/kwok/cmd/kwok
# KWOK >= 0.8 ships no default stages; the launcher composes its config from these files.
mkdir -p "$cache/build/kwok-$kwok/stages"
cp -r "$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage/." "$cache/build/kwok-$kwok/stages/"
chmod -R u+w "$cache/build/kwok-$kwok/stages"
ln -sfn "$cache/build/kwok-$kwok/stages" "$bin/kwok-stages"
fi

if want helm; then
helm=$(module_version helm helm.sh/helm/v3)
build helm "helm-$helm" "-s -w -X helm.sh/helm/v3/internal/version.version=$helm" helm=helm.sh/helm/v3/cmd/helm
fi

echo "binaries ready in $bin ($wanted)"
