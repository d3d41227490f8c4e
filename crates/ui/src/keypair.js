// Create kubeconfig: an ECDSA P-256 key pair made here with WebCrypto, a PKCS #10
// signing request built and signed here, and only that request sent to Shoal. The
// answer (CA, certificate, server) and the private key make the kubeconfig, which
// is offered for download once. The private key is never sent anywhere.
(function () {
  "use strict";
  var form = document.getElementById("kubeconfig-form");
  var button = document.getElementById("kubeconfig-create");
  var status = document.getElementById("kubeconfig-status");
  if (!form || !button || !status) return;
  if (!window.crypto || !window.crypto.subtle) {
    status.textContent = "This browser cannot make keys here (WebCrypto needs HTTPS): use shoal kubeconfig create.";
    return;
  }
  button.hidden = false;

  // DER: a tag, its length and its content, as arrays of bytes.
  function length(n) {
    if (n < 128) return [n];
    var bytes = [];
    while (n > 0) { bytes.unshift(n & 255); n = Math.floor(n / 256); }
    return [0x80 | bytes.length].concat(bytes);
  }
  function tlv(tag, content) { return [tag].concat(length(content.length), content); }
  function sequence() { return tlv(0x30, [].concat.apply([], arguments)); }
  function oid(dotted) {
    var parts = dotted.split(".").map(Number);
    var out = [40 * parts[0] + parts[1]];
    for (var i = 2; i < parts.length; i++) {
      var v = parts[i], chunk = [v & 127];
      v = Math.floor(v / 128);
      while (v > 0) { chunk.unshift((v & 127) | 128); v = Math.floor(v / 128); }
      out = out.concat(chunk);
    }
    return tlv(0x06, out);
  }
  function integer(bytes) {
    var i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    bytes = bytes.slice(i);
    if (bytes[0] & 0x80) bytes = [0].concat(bytes);
    return tlv(0x02, bytes);
  }
  function pem(label, bytes) {
    var text = btoa(String.fromCharCode.apply(null, bytes));
    var lines = text.match(/.{1,64}/g).join("\n");
    return "-----BEGIN " + label + "-----\n" + lines + "\n-----END " + label + "-----\n";
  }
  function bytesOf(buffer) { return Array.from(new Uint8Array(buffer)); }

  // The request: subject CN=browser (Shoal prefixes the user), the public key, no
  // attributes, signed with ecdsa-with-SHA256.
  async function signingRequest(keys) {
    var subtle = window.crypto.subtle;
    var spki = bytesOf(await subtle.exportKey("spki", keys.publicKey));
    var cn = Array.from(new TextEncoder().encode("browser"));
    var subject = sequence(tlv(0x31, sequence(oid("2.5.4.3"), tlv(0x0c, cn))));
    var info = sequence(tlv(0x02, [0]), subject, spki, [0xa0, 0x00]);
    var raw = bytesOf(await subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey, new Uint8Array(info)));
    var half = raw.length / 2;
    var signature = sequence(integer(raw.slice(0, half)), integer(raw.slice(half)));
    return pem("CERTIFICATE REQUEST", sequence(info, sequence(oid("1.2.840.10045.4.3.2")), tlv(0x03, [0].concat(signature))));
  }

  function kubeconfig(answer, keyPem) {
    var name = JSON.stringify(answer.entry);
    var lines = [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: " + name,
      "  cluster:",
      "    server: " + JSON.stringify(answer.server),
      "    certificate-authority-data: " + btoa(answer.ca)
    ];
    if (answer.tlsServerName) lines.push("    tls-server-name: " + JSON.stringify(answer.tlsServerName));
    lines = lines.concat([
      "users:",
      "- name: " + name,
      "  user:",
      "    client-certificate-data: " + btoa(answer.certificate),
      "    client-key-data: " + btoa(keyPem),
      "contexts:",
      "- name: " + name,
      "  context:",
      "    cluster: " + name,
      "    user: " + name,
      "current-context: " + name,
      ""
    ]);
    return lines.join("\n");
  }

  button.addEventListener("click", async function () {
    button.disabled = true;
    status.textContent = "Making a key pair in this browser and asking Shoal to sign it…";
    try {
      var keys = await window.crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
      var csr = await signingRequest(keys);
      var response = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
        body: new URLSearchParams({ csr: csr })
      });
      var answer = await response.json();
      if (!response.ok) {
        status.textContent = "Not created: " + answer.message;
        button.disabled = false;
        return;
      }
      var keyPem = pem("PRIVATE KEY", bytesOf(await window.crypto.subtle.exportKey("pkcs8", keys.privateKey)));
      var file = answer.entry + ".kubeconfig";
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([kubeconfig(answer, keyPem)], { type: "application/yaml" }));
      link.download = file;
      document.body.appendChild(link);
      link.click();
      link.remove();
      status.textContent = "Downloaded " + file + " (key pair " + answer.keypair + "). Its private key exists only in that file: use it with kubectl --kubeconfig " + file + " get nodes.";
    } catch (e) {
      status.textContent = "Not created: " + e;
      button.disabled = false;
    }
  });
})();
