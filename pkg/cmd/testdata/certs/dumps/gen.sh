#!/bin/sh
# Writes the saved dumps that TestCertsDumps reads. The certificates are made
# by OpenSSL (not by this program) and the JSON is written out by hand in the
# shapes Envoy, istioctl and ztunnel print (Envoy's admin API docs and
# config_dump.proto, istioctl's proxy-config secret testdata, ztunnel's
# src/admin.rs). Dates are fixed around the tests' clock, 2026-01-02T03:04:05Z.
# Run from this directory: sh gen.sh
set -eu
out=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
cat > ca.cnf <<'EOF'
[ca]
default_ca = ca
[ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
organizationName = optional
commonName = optional
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[rootspiffe]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
subjectAltName = URI:$ENV::SPIFFE
[inter]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
authorityKeyIdentifier = keyid
subjectAltName = critical,URI:$ENV::SPIFFE
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:httpbin.example.com
EOF
touch index.txt
echo 1001 > serial
export SPIFFE=unused

# ca NAME SUBJECT EXT [ISSUER]: a CA valid 2025-12-03 to 2035-12-31.
ca() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
	openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
	if [ $# -eq 3 ]; then
		openssl ca -batch -config ca.cnf -selfsign -keyfile "$1.key" -in "$1.csr" \
			-startdate 20251203030405Z -enddate 20351231030405Z -extensions "$3" -notext -out "$1.pem" 2>/dev/null
	else
		openssl ca -batch -config ca.cnf -keyfile "$4.key" -cert "$4.pem" -in "$1.csr" \
			-startdate 20251203030405Z -enddate 20351231030405Z -extensions "$3" -notext -out "$1.pem" 2>/dev/null
	fi
}
# leaf NAME SPIFFE-ID ISSUER: a 24h workload certificate with an empty
# subject, as istiod issues them, 1h old.
leaf() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
	openssl req -new -key "$1.key" -subj "/" -out "$1.csr"
	SPIFFE=$2 openssl ca -batch -config ca.cnf -keyfile "$3.key" -cert "$3.pem" -in "$1.csr" \
		-startdate 20260102020405Z -enddate 20260103020405Z -extensions leaf -notext -out "$1.pem" 2>/dev/null
}
b64() { cat "$@" | base64 -w0; }

ca root "/O=cluster.local" root
ca inter "/O=cluster.local/CN=Intermediate CA" inter root
leaf sidecar spiffe://cluster.local/ns/default/sa/default root
leaf plugged spiffe://cluster.local/ns/default/sa/default inter
leaf gateway spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account root
SPIFFE=spiffe://east.local ca east "/O=east.local" rootspiffe
SPIFFE=spiffe://west.local ca west "/O=west.local" rootspiffe
leaf federated spiffe://east.local/ns/default/sa/default east
ca spireeast "/O=my-company.org/CN=East Root CA" root
ca spirewest "/O=my-company.org/CN=West Root CA" root
leaf waypoint spiffe://east.local/ns/ambient/sa/waypoint spireeast
leaf productpage spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage root
leaf reviews spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews root
ca credca "/O=example Inc./CN=example.com" root
openssl ecparam -name prime256v1 -genkey -noout -out httpbin.key
openssl req -new -key httpbin.key -subj "/O=httpbin organization/CN=httpbin.example.com" -out httpbin.csr
openssl ca -batch -config ca.cnf -keyfile credca.key -cert credca.pem -in httpbin.csr \
	-startdate 20251203030405Z -enddate 20261203030405Z -extensions server -notext -out httpbin.pem 2>/dev/null

redacted=W3JlZGFjdGVkXQ==

# All of a sidecar's dump (curl localhost:15000/config_dump), shortened:
# every section is there, with extension types this program does not know.
# The workload CA is plugged in, so the chain has an intermediate.
cat > "$out/envoy-full.json" <<EOF
{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
   "bootstrap": {
    "node": {
     "id": "sidecar~10.244.0.7~web-1.default~default.svc.cluster.local",
     "cluster": "web.default",
     "metadata": {"ISTIO_VERSION": "1.31.0", "NAMESPACE": "default"},
     "user_agent_name": "envoy"
    },
    "stats_config": {"use_all_default_tags": false},
    "static_resources": {
     "listeners": [
      {
       "name": "0.0.0.0_15090",
       "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15090}},
       "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
         "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
         "stat_prefix": "stats",
         "http_filters": [{"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig", "disable_host_header_fallback": true}}]
        }
       }]}]
      }
     ]
    }
   },
   "last_updated": "2026-01-02T02:04:00.512Z"
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
   "version_info": "2026-01-02T02:04:01Z/12",
   "static_clusters": [{"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "prometheus_stats", "type": "STATIC"}, "last_updated": "2026-01-02T02:04:00.520Z"}],
   "dynamic_active_clusters": [{
    "version_info": "2026-01-02T02:04:01Z/12",
    "cluster": {
     "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
     "name": "outbound|8080||backend.default.svc.cluster.local",
     "type": "EDS",
     "transport_socket_matches": [{"name": "tlsMode-istio", "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": {"api_config_source": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}], "transport_api_version": "V3"}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}], "alpn_protocols": ["istio-peer-exchange", "istio"]}, "sni": "outbound_.8080_._.backend.default.svc.cluster.local"}}}],
     "metadata": {"filter_metadata": {"istio": {"services": [{"host": "backend.default.svc.cluster.local", "name": "backend", "namespace": "default"}]}}}
    },
    "last_updated": "2026-01-02T02:04:01.733Z"
   }]
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
   "version_info": "2026-01-02T02:04:01Z/12",
   "dynamic_listeners": [{
    "name": "virtualInbound",
    "active_state": {
     "version_info": "2026-01-02T02:04:01Z/12",
     "listener": {
      "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
      "name": "virtualInbound",
      "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
      "listener_filters": [{"name": "istio.metadata_exchange", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config", "value": {}}}]
     },
     "last_updated": "2026-01-02T02:04:01.741Z"
    }
   }]
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
   "dynamic_route_configs": [{"version_info": "2026-01-02T02:04:01Z/12", "route_config": {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "8080", "validate_clusters": false}, "last_updated": "2026-01-02T02:04:01.750Z"}]
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
   "dynamic_active_secrets": [
    {
     "name": "default",
     "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
     "last_updated": "2026-01-02T02:04:05.134Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "default",
      "tls_certificate": {
       "certificate_chain": {"inline_bytes": "$(b64 plugged.pem inter.pem root.pem)"},
       "private_key": {"inline_bytes": "$redacted"}
      }
     }
    },
    {
     "name": "ROOTCA",
     "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
     "last_updated": "2026-01-02T02:04:05.133Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "ROOTCA",
      "validation_context": {"trusted_ca": {"inline_bytes": "$(b64 root.pem)"}}
     }
    }
   ],
   "dynamic_warming_secrets": [
    {
     "name": "configmap://default/extra-ca",
     "version_info": "uninitialized",
     "last_updated": "2026-01-02T02:04:05.140Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "configmap://default/extra-ca"
     }
    }
   ]
  }
 ]
}
EOF

# curl 'localhost:15000/config_dump?resource=dynamic_active_secrets': each
# secret on its own, the private key redacted.
cat > "$out/envoy-resource-secrets.json" <<EOF
{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret",
   "name": "default",
   "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
   "last_updated": "2026-01-02T02:04:05.134Z",
   "secret": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    "name": "default",
    "tls_certificate": {
     "certificate_chain": {"inline_bytes": "$(b64 sidecar.pem root.pem)"},
     "private_key": {"inline_bytes": "$redacted"}
    }
   }
  },
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret",
   "name": "ROOTCA",
   "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
   "last_updated": "2026-01-02T02:04:05.133Z",
   "secret": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    "name": "ROOTCA",
    "validation_context": {"trusted_ca": {"inline_bytes": "$(b64 root.pem)"}}
   }
  }
 ]
}
EOF

# istioctl proxy-config secret POD -o json: the SecretsConfigDump alone, in
# protojson's camelCase.
cat > "$out/envoy-camelcase.json" <<EOF
{
    "dynamicActiveSecrets": [
        {
            "name": "default",
            "versionInfo": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
            "lastUpdated": "2026-01-02T02:04:05.134Z",
            "secret": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "default",
                "tlsCertificate": {
                    "certificateChain": {
                        "inlineBytes": "$(b64 sidecar.pem root.pem)"
                    },
                    "privateKey": {
                        "inlineBytes": "$redacted"
                    }
                }
            }
        },
        {
            "name": "ROOTCA",
            "versionInfo": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
            "lastUpdated": "2026-01-02T02:04:05.133Z",
            "secret": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "ROOTCA",
                "validationContext": {
                    "trustedCa": {
                        "inlineBytes": "$(b64 root.pem)"
                    }
                }
            }
        }
    ]
}
EOF

# A proxy that asked for its certificate and has none yet: "default" is
# warming, with no payload; the root arrived.
cat > "$out/envoy-warming.json" <<EOF
{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
   "dynamic_active_secrets": [
    {
     "name": "ROOTCA",
     "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
     "last_updated": "2026-01-02T02:04:05.133Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "ROOTCA",
      "validation_context": {"trusted_ca": {"inline_bytes": "$(b64 root.pem)"}}
     }
    }
   ],
   "dynamic_warming_secrets": [
    {
     "name": "default",
     "version_info": "uninitialized",
     "last_updated": "2026-01-02T03:03:58.210Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "default"
     }
    }
   ]
  }
 ]
}
EOF

# Two trust domains federated in one trusted_ca, each root with its
# spiffe://TRUST-DOMAIN URI SAN.
cat > "$out/envoy-federation.json" <<EOF
{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
   "dynamic_active_secrets": [
    {
     "name": "default",
     "last_updated": "2026-01-02T02:04:05.134Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "default",
      "tls_certificate": {
       "certificate_chain": {"inline_bytes": "$(b64 federated.pem)"},
       "private_key": {"inline_bytes": "$redacted"}
      }
     }
    },
    {
     "name": "ROOTCA",
     "last_updated": "2026-01-02T02:04:05.133Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "ROOTCA",
      "validation_context": {"trusted_ca": {"inline_bytes": "$(b64 west.pem east.pem)"}}
     }
    }
   ]
  }
 ]
}
EOF

# A waypoint with SPIRE: the roots come per trust domain in the SPIFFE
# validator's config and trusted_ca is empty (as in istioctl's spire
# testdata); these roots have no URI SAN.
cat > "$out/envoy-spire-waypoint.json" <<EOF
{
  "configs": [
    {
      "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
      "dynamic_active_secrets": [
        {
          "name": "default",
          "last_updated": "2026-01-02T02:04:05.591Z",
          "secret": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "default",
            "tls_certificate": {
              "certificate_chain": {"inline_bytes": "$(b64 waypoint.pem)"},
              "private_key": {"inline_bytes": "$redacted"}
            }
          }
        },
        {
          "name": "ROOTCA",
          "last_updated": "2026-01-02T02:04:05.586Z",
          "secret": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "ROOTCA",
            "validation_context": {
              "trusted_ca": {
              },
              "custom_validator_config": {
                "name": "envoy.tls.cert_validator.spiffe",
                "typed_config": {
                  "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                  "trust_domains": [
                    {"name": "east.local", "trust_bundle": {"inline_bytes": "$(b64 spireeast.pem)"}},
                    {"name": "west.local", "trust_bundle": {"inline_bytes": "$(b64 spirewest.pem)"}}
                  ]
                }
              }
            }
          }
        }
      ]
    }
  ]
}
EOF

# An ingress gateway: its own identity in "default", and a TLS credential
# from a Kubernetes Secret (kubernetes://NAME) that is not a mesh identity.
cat > "$out/envoy-gateway.json" <<EOF
{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
   "dynamic_active_secrets": [
    {
     "name": "kubernetes://httpbin-credential",
     "version_info": "2026-01-02T02:04:05Z/3",
     "last_updated": "2026-01-02T02:04:05.301Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "kubernetes://httpbin-credential",
      "tls_certificate": {
       "certificate_chain": {"inline_bytes": "$(b64 httpbin.pem)"},
       "private_key": {"inline_bytes": "$redacted"}
      }
     }
    },
    {
     "name": "default",
     "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
     "last_updated": "2026-01-02T02:04:05.134Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "default",
      "tls_certificate": {
       "certificate_chain": {"inline_bytes": "$(b64 gateway.pem root.pem)"},
       "private_key": {"inline_bytes": "$redacted"}
      }
     }
    },
    {
     "name": "ROOTCA",
     "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717",
     "last_updated": "2026-01-02T02:04:05.133Z",
     "secret": {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
      "name": "ROOTCA",
      "validation_context": {"trusted_ca": {"inline_bytes": "$(b64 root.pem)"}}
     }
    }
   ]
  }
 ]
}
EOF

# ztunnel's admin config_dump, shortened: camelCase, one entry per identity
# it holds certificates for, each PEM base64-encoded, serials in decimal.
serial() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr a-f A-F | { read -r h; echo "ibase=16; $h" | bc; }; }
cert() {
	printf '{"pem": "%s", "serialNumber": "%s", "validFrom": "%s", "expirationTime": "%s"}' "$(b64 "$1")" "$(serial "$1")" "$2" "$3"
}
cat > "$out/ztunnel.json" <<EOF
{
  "workloads": [
    {"uid": "Kubernetes//Pod/bookinfo/productpage-v1-54bb874995-hzbp7", "workloadIps": ["10.244.1.9"], "protocol": "HBONE", "name": "productpage-v1-54bb874995-hzbp7", "namespace": "bookinfo", "serviceAccount": "bookinfo-productpage", "trustDomain": "cluster.local", "node": "node1", "status": "Healthy"},
    {"uid": "Kubernetes//Pod/bookinfo/reviews-v1-5fd6d4f8f8-9zn2x", "workloadIps": ["10.244.1.11"], "protocol": "HBONE", "name": "reviews-v1-5fd6d4f8f8-9zn2x", "namespace": "bookinfo", "serviceAccount": "bookinfo-reviews", "trustDomain": "cluster.local", "node": "node1", "status": "Healthy"}
  ],
  "services": [],
  "policies": [],
  "certificates": [
    {
      "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
      "state": "Available",
      "certChain": [
        $(cert productpage.pem 2026-01-02T02:04:05Z 2026-01-03T02:04:05Z)
      ],
      "rootCerts": [
        $(cert root.pem 2025-12-03T03:04:05Z 2035-12-31T03:04:05Z)
      ]
    },
    {
      "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
      "state": "Available",
      "certChain": [
        $(cert reviews.pem 2026-01-02T02:04:05Z 2026-01-03T02:04:05Z)
      ],
      "rootCerts": [
        $(cert root.pem 2025-12-03T03:04:05Z 2035-12-31T03:04:05Z)
      ]
    }
  ],
  "config": {"proxyMode": "Shared", "adminAddr": {"SocketAddr": "[::1]:15000"}, "caAddress": "https://istiod.istio-system.svc:15012"},
  "version": {"version": "1.31.0", "rustVersion": "1.90.0", "buildProfile": "release", "buildTarget": "x86_64-unknown-linux-gnu"}
}
EOF
