{{/*
CEL: whether the LabelSelector at the path given (e.g. "params.spec.namespaceSelector") selects
the request's namespace (its labels in `variables.namespaceLabels`). The same rules as the
operator's (kube's Selector, DESIGN §7.1): every matchLabels entry and every matchExpressions
requirement must hold; {} selects every namespace; a missing selector, an In/NotIn without
values or an unknown operator selects none.
*/}}
{{- define "ccplant.admission.selects" -}}
has({{ . }}) &&
(!has({{ . }}.matchLabels) ||
  {{ . }}.matchLabels.all(k,
    k in variables.namespaceLabels && variables.namespaceLabels[k] == {{ . }}.matchLabels[k])) &&
(!has({{ . }}.matchExpressions) ||
  {{ . }}.matchExpressions.all(e,
    e.operator == 'In' ? has(e.values) && e.key in variables.namespaceLabels &&
      variables.namespaceLabels[e.key] in e.values :
    e.operator == 'NotIn' ? has(e.values) && (!(e.key in variables.namespaceLabels) ||
      !(variables.namespaceLabels[e.key] in e.values)) :
    e.operator == 'Exists' ? e.key in variables.namespaceLabels :
    e.operator == 'DoesNotExist' ? !(e.key in variables.namespaceLabels) :
    false))
{{- end }}

{{/*
A binding of the policy named by `.name`, with the admission values (`.values`); `.params`
binds it to every object of its paramKind (the policy is evaluated once per object).
*/}}
{{- define "ccplant.admission.binding" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .name }}
  labels:
    {{- include "ccplant.labels" .root | nindent 4 }}
spec:
  policyName: {{ .name }}
  validationActions:
    {{- toYaml .root.Values.admission.validationActions | nindent 4 }}
  {{- if .params }}
  # Every object of the paramKind is a param: the policy runs once per object and refuses the
  # request when any run fails. The expressions look only at the object the request names;
  # none at all (e.g. no object of that kind yet) admits the request.
  paramRef:
    selector: {}
    parameterNotFoundAction: Allow
  {{- end }}
{{- end }}
