#!/usr/bin/env bash
# Makes the capture corpus in pkg/sniff/testdata/corpus with TLS, HTTP, DNS
# and UDP stacks that are not ours: OpenSSL's s_server/s_client, curl,
# Python's http.server, dnsmasq, dig, socat and the kernel's own IP
# fragmentation, captured by tcpdump.
#
#   sudo hack/make-corpus.sh [OUTDIR]
#
# Needs root: everything runs in three network namespaces made here and
# removed on exit (a "node" with a bridge, a "client" pod and a "server" pod
# on veths, addresses 10.250.0.0/24 and fd00:250::/64). Nothing is sent
# outside them. Captures are taken on the server pod's node-side veth, as
# `kubectl mesh sniff` does, except any-sll2.pcap (`tcpdump -i any` in the
# node namespace: link type SLL2, every packet seen on both veths).
#
# Keys, ephemeral ports and TLS randoms change at every run; the tshark
# readings in the corpus README are rewritten from the new files each time.
#
#   hack/make-corpus.sh --readings [OUTDIR]
#
# only rewrites the readings in the README from the files there (no root).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# decode FILE: the ports tshark must be told are TLS (it decodes 80 and 8080
# as HTTP and leaves 15008 undecoded). Keep in step with corpus_test.go.
decode() {
	case $1 in
	istio-mtls-tls13.pcap | istio-mtls-tls12.pcap | mixed-mtls-udp.pcap | any-sll2.pcap) echo "-d tcp.port==80,tls" ;;
	hbone-15008.pcap) echo "-d tcp.port==15008,tls" ;;
	pooled-midstream.pcap) echo "-d tcp.port==8080,tls -d tcp.port==15008,tls" ;;
	esac
}

# reading TITLE FILE TSHARK-ARGS...: prints a tshark query and its answer.
reading() {
	local title=$1 f=$2
	shift 2
	local res
	[ -z "$title" ] || printf '# %s\n' "$title"
	printf '$ tshark -r %s %s%s\n' "$f" "$(decode "$f" | sed 's/$/ /')" "$(printf '%q ' "$@" | sed 's/ $//')"
	# shellcheck disable=SC2046
	res=$(cd "$out" && tshark -r "$f" $(decode "$f") "$@" 2>/dev/null) || res="(tshark failed)"
	printf '%s\n' "${res:-(nothing)}"
}

ch=(-Y tls.handshake.type==1 -T fields -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport
	-e tls.handshake.extensions_server_name -e tls.handshake.extensions_alpn_str)
sh=(-Y tls.handshake.type==2 -T fields -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport
	-e tls.handshake.version -e tls.handshake.extensions.supported_version)
http=(-Y http.request -T fields -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport
	-e http.request.method -e http.request.uri -e http.request.version)
udp=(-o data.show_as_text:TRUE -Y udp -T fields -e ip.src -e ipv6.src -e udp.srcport -e ip.dst -e ipv6.dst
	-e udp.dstport -e udp.length -e data.text -e syslog.msg)

readings() {
	local tmp f
	set +e
	tmp=$(mktemp)
	{
		echo "<!-- readings:begin (hack/make-corpus.sh --readings rewrites this part) -->"
		echo "Read with $(tshark --version 2>/dev/null | head -1)"
		for f in "$out"/*.pcap; do
			f=$(basename "$f")
			echo
			echo "### $f"
			echo
			echo '```'
			printf '# %s, %s packets, %s bytes\n' "$(capinfos -M -E "$out/$f" 2>/dev/null | sed -n 's/^File encapsulation: *//p')" \
				"$(capinfos -M -c "$out/$f" 2>/dev/null | sed -n 's/^Number of packets: *//p')" "$(stat -c %s "$out/$f")"
			printf '# protocol stacks: count frame.protocols\n$ tshark -r %s %s-T fields -e frame.protocols | sort | uniq -c\n' "$f" "$(decode "$f" | sed 's/$/ /')"
			# shellcheck disable=SC2046
			(cd "$out" && tshark -r "$f" $(decode "$f") -T fields -e frame.protocols 2>/dev/null | sort | uniq -c | sed 's/^ *//')
			case $f in
			istio-* | tls-* | hbone-* | curl-https.pcap | mixed-* | any-*)
				reading "TLS ClientHellos: src sport dst dport SNI ALPN" "$f" "${ch[@]}"
				reading "TLS ServerHellos: src sport dst dport version supported_version" "$f" "${sh[@]}"
				;;
			esac
			case $f in
			curl-http.pcap | any-*) reading "HTTP requests" "$f" "${http[@]}" ;;
			pooled-*)
				reading "TCP connections opened (SYN)" "$f" -Y 'tcp.flags.syn==1' -T fields -e tcp.stream
				reading "TLS handshake messages" "$f" -Y 'tls.handshake' -T fields -e tcp.stream
				printf '# TLS application-data frames per direction: count stream src sport dst dport\n'
				reading "" "$f" -Y tls.record.content_type==23 -T fields -e tcp.stream -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport |
					awk 'NR==1 {print; next} {print | "sort | uniq -c | sed \"s/^ *//\""}'
				;;
			esac
			case $f in
			udp-frag-*) reading "UDP datagrams (after reassembly): src sport dst dport length fragments" "$f" -Y udp -T fields \
				-e ip.src -e ipv6.src -e udp.srcport -e ip.dst -e ipv6.dst -e udp.dstport -e udp.length -e ip.fragment.count -e ipv6.fragment.count ;;
			udp-* | mixed-*) reading "UDP datagrams: src sport dst dport length text" "$f" "${udp[@]}" ;;
			dns.pcap) reading "DNS: response? name type A TXT" "$f" -Y dns -T fields -e dns.flags.response -e dns.qry.name -e dns.qry.type -e dns.a -e dns.txt ;;
			esac
			case $f in
			udp-frag-*)
				reading "fragments: frame, IPv4 MF and offset, IPv6 M and offset (offsets in 8-byte units)" "$f" \
					-Y 'ip.flags.mf==1 || ip.frag_offset>0 || ipv6.fraghdr' -T fields -e frame.number \
					-e ip.flags.mf -e ip.frag_offset -e ipv6.fraghdr.more -e ipv6.fraghdr.offset
				reading 'frames whose own bytes hold "TGN" (none: the marker spans fragments)' "$f" -Y 'frame contains "TGN"' -T fields -e frame.number
				reading 'frames whose reassembled UDP payload holds "TGN"' "$f" -Y 'udp contains "TGN"' -T fields -e frame.number
				;;
			esac
			echo '```'
		done
		echo "<!-- readings:end -->"
	} >"$tmp"
	if [ -f "$out/README.md" ] && grep -q '^<!-- readings:begin' "$out/README.md"; then
		awk -v gen="$tmp" '
			/^<!-- readings:begin/ { while ((getline l < gen) > 0) print l; skip = 1; next }
			/^<!-- readings:end/ { skip = 0; next }
			!skip { print }
		' "$out/README.md" >"$tmp.readme"
		mv "$tmp.readme" "$out/README.md"
	else
		cat "$tmp" >>"$out/README.md"
	fi
	rm -f "$tmp"
	echo "rewrote the readings in $out/README.md"
}

if [ "${1:-}" = --readings ]; then
	out=$(cd "${2:-$root/pkg/sniff/testdata/corpus}" && pwd)
	readings
	exit 0
fi

out=$(mkdir -p "${1:-$root/pkg/sniff/testdata/corpus}" && cd "${1:-$root/pkg/sniff/testdata/corpus}" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "make-corpus.sh needs root (network namespaces); run it with sudo" >&2
	exit 1
fi

need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check tcpdump tcpdump
check tshark tshark
check openssl openssl
check curl curl
check socat socat
check dnsmasq dnsmasq-base
check dig dnsutils
check ip iproute2
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
py=/usr/bin/python3

id=$$
NODE=corpus-node-$id
CLI=corpus-cli-$id
SRV=corpus-srv-$id
work=$(mktemp -d)
pgids=()

cleanup() {
	local rc=$?
	set +e
	for p in "${pgids[@]}"; do
		kill -TERM -- "-$p" 2>/dev/null
	done
	sleep 0.2
	for p in "${pgids[@]}"; do
		kill -KILL -- "-$p" 2>/dev/null
	done
	for ns in "$CLI" "$SRV" "$NODE"; do
		ip netns del "$ns" 2>/dev/null
	done
	if [ $rc -ne 0 ]; then
		echo "make-corpus.sh failed (exit $rc); namespaces and processes removed, logs in $work" >&2
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME NS CMD...: runs CMD in NS in its own process group (so that it
# and its children are stopped together), output in $work/NAME.log.
start() {
	local name=$1 ns=$2
	shift 2
	setsid ip netns exec "$ns" "$@" >"$work/$name.log" 2>&1 </dev/null &
	pgids+=("$!")
	eval "pid_$name=$!"
}

# stop NAME: stops what start NAME began and waits for it.
stop() {
	local pid
	eval "pid=\$pid_$1"
	kill -TERM -- "-$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

# forget PID: cleanup no longer signals this group (its number may be reused).
forget() {
	local p keep=()
	for p in "${pgids[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	pgids=("${keep[@]}")
}

# listening NS PROTO PORT: waits until something listens on PORT in NS.
listening() {
	local i
	for i in $(seq 100); do
		if ip netns exec "$1" ss -Hln"$2" "sport = :$3" | grep -q .; then
			return 0
		fi
		sleep 0.05
	done
	echo "nothing listens on $2 port $3 in $1; see $work" >&2
	return 1
}

# capture FILE [IFACE]: starts tcpdump in the node namespace on the server
# pod's veth (or IFACE) and waits until it captures.
capture() {
	local file=$1 iface=${2:-vs} i
	start tcpdump "$NODE" tcpdump -Z root --immediate-mode -n -U -s 0 -i "$iface" -w "$work/$file"
	for i in $(seq 100); do
		grep -q "listening on" "$work/tcpdump.log" && return 0
		sleep 0.05
	done
	echo "tcpdump did not start:" >&2
	cat "$work/tcpdump.log" >&2
	return 1
}

# done_capture FILE: stops tcpdump (SIGINT flushes the file) and moves it out.
done_capture() {
	sleep 0.3
	kill -INT "$pid_tcpdump"
	wait "$pid_tcpdump" || true
	forget "$pid_tcpdump"
	if [ "$(stat -c %s "$work/$1")" -le 24 ]; then
		echo "tcpdump captured nothing for $1; see the logs in $work" >&2
		return 1
	fi
	mv "$work/$1" "$out/$1"
	chmod 0644 "$out/$1"
	echo "wrote $out/$1 ($(stat -c %s "$out/$1") bytes)"
}

# --- network ----------------------------------------------------------------
for ns in "$NODE" "$CLI" "$SRV"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	# IPv6 stays off (no router solicitations or MLD in the captures) until
	# the IPv6 capture turns it on.
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$NODE" link add br0 type bridge
ip -n "$NODE" link add vc type veth peer name eth0 netns "$CLI"
ip -n "$NODE" link add vs type veth peer name eth0 netns "$SRV"
ip -n "$NODE" link set vc master br0
ip -n "$NODE" link set vs master br0
ip -n "$NODE" addr add 10.250.0.1/24 dev br0
ip -n "$CLI" addr add 10.250.0.10/24 dev eth0
ip -n "$SRV" addr add 10.250.0.20/24 dev eth0
for l in br0 vc vs; do ip -n "$NODE" link set "$l" up; done
ip -n "$CLI" link set eth0 up
ip -n "$SRV" link set eth0 up
sleep 0.5

# --- certificates: one CA, workload certificates with SPIFFE IDs -----------
pki=$work/pki
mkdir "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
	-subj "/O=cluster.local" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
leaf() { # leaf NAME SAN
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/" \
		-keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
	printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$pki/$1.ext"
	openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 3650 -extfile "$pki/$1.ext" -out "$pki/$1.pem" 2>/dev/null
}
leaf backend "URI:spiffe://cluster.local/ns/default/sa/backend"
leaf frontend "URI:spiffe://cluster.local/ns/default/sa/frontend"
leaf web "DNS:example.internal"

sni=outbound_.80_._.backend.default.svc.cluster.local
srv_mtls=(-cert "$pki/backend.pem" -key "$pki/backend.key" -CAfile "$pki/ca.pem" -Verify 1)
cli_mtls=(-cert "$pki/frontend.pem" -key "$pki/frontend.key" -CAfile "$pki/ca.pem")
body='POST /greetings HTTP/1.1\r\nHost: backend\r\nContent-Length: 29\r\n\r\n{"greetings":"Hi TGN meetup"}\r\n'

# s_server_rev NAME PORT ARGS...: an OpenSSL server that answers each line
# with the line reversed.
s_server_rev() {
	local name=$1 port=$2
	shift 2
	start "$name" "$SRV" openssl s_server -rev -accept "10.250.0.20:$port" "$@"
	listening "$SRV" t "$port"
}

# s_client_once PORT ARGS...: one OpenSSL client connection that sends the
# request, reads the answer and closes.
s_client_once() {
	local port=$1
	shift
	{ printf "$body"; sleep 0.4; } |
		timeout 10 ip netns exec "$CLI" openssl s_client -connect "10.250.0.20:$port" "$@" >>"$work/s_client.log" 2>&1
}

# --- 1. sidecar-shaped mTLS, TLS 1.3 and 1.2 ---------------------------------
for v in 1.3 1.2; do
	f=istio-mtls-tls${v/./}.pcap
	s_server_rev mtls 80 "${srv_mtls[@]}" -alpn istio-peer-exchange,h2,http/1.1
	capture "$f"
	for i in 1 2; do
		s_client_once 80 "${cli_mtls[@]}" "-tls${v/./_}" -servername "$sni" -alpn istio-peer-exchange,istio
	done
	done_capture "$f"
	stop mtls
done

# plain TLS, no client certificate, browser-like ALPN
s_server_rev web 443 -cert "$pki/web.pem" -key "$pki/web.key" -alpn h2,http/1.1
capture tls-plain-h2.pcap
s_client_once 443 -CAfile "$pki/ca.pem" -servername example.internal -alpn h2,http/1.1
done_capture tls-plain-h2.pcap
stop web

# --- 2. HBONE-shaped: TLS 1.3 to 15008, ALPN h2, no SNI, mTLS ----------------
s_server_rev hbone 15008 "${srv_mtls[@]}" -tls1_3 -alpn h2
capture hbone-15008.pcap
for i in 1 2; do
	s_client_once 15008 "${cli_mtls[@]}" -tls1_3 -noservername -alpn h2
done
done_capture hbone-15008.pcap
stop hbone

# --- 3. curl: HTTPS to openssl s_server -www, HTTP to python3 http.server ----
start www "$SRV" openssl s_server -www -accept 10.250.0.20:443 -cert "$pki/web.pem" -key "$pki/web.key"
listening "$SRV" t 443
capture curl-https.pcap
curl_https() {
	timeout 10 ip netns exec "$CLI" curl -sS -o /dev/null --cacert "$pki/ca.pem" \
		--resolve example.internal:443:10.250.0.20 "$@" https://example.internal/
}
curl_https
curl_https --http1.1 --tlsv1.2 --tls-max 1.2
done_capture curl-https.pcap
stop www

site=$work/site
mkdir "$site"
printf '{"greetings":"Hi TGN meetup"}\n' >"$site/greetings"
start http "$SRV" "$py" -m http.server --bind 10.250.0.20 --directory "$site" 80
listening "$SRV" t 80
capture curl-http.pcap
for i in 1 2; do
	timeout 10 ip netns exec "$CLI" curl -sS -o /dev/null http://10.250.0.20/greetings
done
done_capture curl-http.pcap
stop http

# --- 4. pooled connections caught mid-stream --------------------------------
# Two long-lived connections (sidecar-shaped on 80, HBONE-shaped on 15008)
# send a request every 100 ms; tcpdump starts 1.5 s after they were opened.
s_server_rev mtls 8080 "${srv_mtls[@]}" -alpn istio-peer-exchange,h2,http/1.1
s_server_rev hbone 15008 "${srv_mtls[@]}" -tls1_3 -alpn h2
pool() { # pool NAME PORT ARGS...
	local name=$1 port=$2
	shift 2
	start "$name" "$CLI" bash -c 'while :; do printf "POST /greetings TGN %s\n" "$(date +%s.%N)"; sleep 0.1; done |
		openssl s_client -connect 10.250.0.20:'"$port"' "$@"' bash "$@"
}
pool pool1 8080 "${cli_mtls[@]}" -servername outbound_.8080_._.backend.default.svc.cluster.local -alpn istio-peer-exchange,istio
pool pool2 15008 "${cli_mtls[@]}" -tls1_3 -noservername -alpn h2
sleep 1.5
capture pooled-midstream.pcap
sleep 1.5
done_capture pooled-midstream.pcap
stop pool1
stop pool2
stop mtls
stop hbone

# --- 5. UDP: cleartext marker, DNS, IPv4 and IPv6 fragments ------------------
start statsd "$SRV" socat -u UDP4-RECV:8125,bind=10.250.0.20 OPEN:/dev/null
start syslog "$SRV" socat -u UDP4-RECV:514,bind=10.250.0.20 OPEN:/dev/null
listening "$SRV" u 8125
listening "$SRV" u 514
udp_send() { # udp_send PORT TEXT
	printf '%s' "$2" | ip netns exec "$CLI" socat -u STDIN "UDP4-SENDTO:10.250.0.20:$1"
}
capture udp-marker.pcap
udp_send 8125 'frontend.greetings.TGN:1|c'
udp_send 8125 'frontend.latency:12|ms|#marker:TGN'
udp_send 514 '<14>1 2025-01-01T00:00:00Z frontend app - - - Hi TGN meetup'
done_capture udp-marker.pcap

start dns "$SRV" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
	--listen-address=10.250.0.20 --pid-file= --user=root --group=root \
	--address=/backend.default.svc.cluster.local/10.250.0.20 \
	--txt-record=greetings.default.svc.cluster.local,"Hi TGN meetup"
listening "$SRV" u 53
capture dns.pcap
ip netns exec "$CLI" dig +tries=1 +time=2 +noall +answer @10.250.0.20 backend.default.svc.cluster.local A >/dev/null
ip netns exec "$CLI" dig +tries=1 +time=2 +noall +answer @10.250.0.20 greetings.default.svc.cluster.local TXT >/dev/null
done_capture dns.pcap
stop dns

# A 3000-byte datagram over a 1500-byte MTU. IPv4 fragments carry 1480
# bytes of IP payload (UDP header + 1472 bytes of data in the first), so the
# marker at data offsets 1471 and 2950 is cut "T|GN" and "TG|N".
start frag4 "$SRV" socat -u UDP4-RECV:9999,bind=10.250.0.20 OPEN:/dev/null
listening "$SRV" u 9999
capture udp-frag-ipv4.pcap
ip netns exec "$CLI" "$py" - <<'EOF'
import socket
data = bytearray(b"." * 3000)
for off in (1471, 2950):
    data[off:off + 3] = b"TGN"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes(data), ("10.250.0.20", 9999))
EOF
done_capture udp-frag-ipv4.pcap
stop frag4

# IPv6: fragments carry 1448 bytes (1500 - 40 - 8, a multiple of 8), so the
# first holds the UDP header + 1440 bytes: markers at 1439 and 2886.
for ns in "$NODE" "$CLI" "$SRV"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
done
for l in br0 vc vs; do ip netns exec "$NODE" sysctl -qw "net.ipv6.conf.$l.disable_ipv6=0"; done
ip netns exec "$CLI" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0
ip netns exec "$SRV" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0
ip -n "$CLI" addr add fd00:250::10/64 dev eth0 nodad
ip -n "$SRV" addr add fd00:250::20/64 dev eth0 nodad
sleep 1
start frag6 "$SRV" socat -u UDP6-RECV:9999,bind=[fd00:250::20] OPEN:/dev/null
listening "$SRV" u 9999
capture udp-frag-ipv6.pcap
ip netns exec "$CLI" "$py" - <<'EOF'
import socket
data = bytearray(b"." * 3000)
for off in (1439, 2886):
    data[off:off + 3] = b"TGN"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.sendto(bytes(data), ("fd00:250::20", 9999))
EOF
done_capture udp-frag-ipv6.pcap
stop frag6
for ns in "$NODE" "$CLI" "$SRV"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done

# --- 6. mixed: mTLS plus one cleartext datagram carrying the marker ----------
s_server_rev mtls 80 "${srv_mtls[@]}" -alpn istio-peer-exchange,h2,http/1.1
capture mixed-mtls-udp.pcap
s_client_once 80 "${cli_mtls[@]}" -tls1_3 -servername "$sni" -alpn istio-peer-exchange,istio
udp_send 8125 'frontend.greetings.TGN:1|c'
s_client_once 80 "${cli_mtls[@]}" -tls1_3 -servername "$sni" -alpn istio-peer-exchange,istio
done_capture mixed-mtls-udp.pcap

# --- tcpdump -i any: SLL2, every packet on both veths ----------------------
start http "$SRV" "$py" -m http.server --bind 10.250.0.20 --directory "$site" 8080
listening "$SRV" t 8080
capture any-sll2.pcap any
s_client_once 80 "${cli_mtls[@]}" -tls1_3 -servername "$sni" -alpn istio-peer-exchange,istio
timeout 10 ip netns exec "$CLI" curl -sS -o /dev/null http://10.250.0.20:8080/greetings
done_capture any-sll2.pcap
stop mtls
stop http
stop statsd
stop syslog

readings
