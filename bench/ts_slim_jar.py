"""Slim TorchServe 0.12.0's frontend jar (``ts/frontend/model-server.jar``, 45 MB) for one Linux x86-64
run: drop what the frontend never loads there, and store the rest uncompressed (the bundle is xz'd as a
whole, which packs stored class files far tighter than the jar's own deflate).

    python bench/ts_slim_jar.py IN.jar OUT.jar

Dropped (bench/ts_bundle.sh proves the result by serving predictions and explanations with it):
natives for other systems (Windows, macOS, aarch64, 32-bit), the Swagger UI webjars, and the test and
scripting libraries the fat jar bundles but ``org.pytorch.serve`` does not reference (Groovy and its
shaded antlr/asm/picocli, Ant, JUnit, TestNG, Hamcrest, JCommander, JavaParser, QDox, JLine).
``META-INF/services`` entries that name dropped classes are removed with them.
"""

from __future__ import annotations

import sys
import zipfile

DROP_PREFIXES = (
    # natives for other systems (netty-tcnative, epoll/kqueue, jansi)
    "META-INF/native/io_grpc_netty_shaded_netty_tcnative_windows",
    "META-INF/native/libio_grpc_netty_shaded_netty_tcnative_osx",
    "META-INF/native/libio_grpc_netty_shaded_netty_tcnative_linux_aarch",
    "META-INF/native/libio_grpc_netty_shaded_netty_transport_native_epoll_aarch",
    "META-INF/native/libnetty_transport_native_epoll_aarch",
    "META-INF/native/libnetty_transport_native_kqueue",
    "META-INF/native/libnetty_resolver_dns_native_macos",
    "META-INF/native/windows32/",
    "META-INF/native/windows64/",
    "META-INF/native/osx/",
    "META-INF/native/linux32/",
    "META-INF/resources/webjars/",
    # Groovy (and its shaded parsers), Ant, test frameworks, source parsers, console
    "groovy/",
    "groovyjarjar",
    "org/codehaus/groovy/",
    "org/apache/groovy/",
    "META-INF/groovy",
    "META-INF/dgminfo",
    "org/apache/tools/",
    "org/junit/",
    "junit/",
    "LICENSE-junit.txt",
    "META-INF/versions/9/org/junit/",
    "org/opentest4j/",
    "org/apiguardian/",
    "org/hamcrest/",
    "org/testng/",
    "testng",
    "com/beust/",
    "com/github/javaparser/",
    "com/thoughtworks/qdox/",
    "jline/",
    "picocli/",
    "org/fusesource/",
)


def dropped(name: str) -> bool:
    return name.startswith(DROP_PREFIXES)


def slim(source: str, target: str) -> tuple[int, int]:
    """Write the slimmed jar; returns (entries kept, entries dropped)."""
    kept = skipped = 0
    with zipfile.ZipFile(source) as jar:
        names = set(jar.namelist())
        classes = {
            n[: -len(".class")].replace("/", ".") for n in names if n.endswith(".class") and not dropped(n)
        }
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as out:
            for info in jar.infolist():
                name = info.filename
                if dropped(name):
                    skipped += 1
                    continue
                data = jar.read(name)
                if name.startswith("META-INF/services/") and not name.endswith("/"):
                    lines = data.decode().splitlines()
                    left = [
                        line
                        for line in lines
                        if not line.strip()
                        or line.lstrip().startswith("#")
                        or line.split("#")[0].strip() in classes
                    ]
                    if not any(line.strip() and not line.lstrip().startswith("#") for line in left):
                        skipped += 1
                        continue
                    data = ("\n".join(left) + "\n").encode()
                info.compress_type = zipfile.ZIP_STORED
                out.writestr(info, data)
                kept += 1
    return kept, skipped


if __name__ == "__main__":
    kept, skipped = slim(sys.argv[1], sys.argv[2])
    print(f"model-server.jar: kept {kept} entries, dropped {skipped}")
