package cmd

import (
	"context"
	"errors"
	"fmt"

	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// The waypoint steps of enable-injection --waypoint and disable-injection.

// planWaypoints reads the waypoint each namespace gets (enable) or uses
// (disable), before anything changes.
func (o *InjectionLabelOptions) planWaypoints(ctx context.Context, plans []plannedLabels) error {
	for i := range plans {
		p := &plans[i]
		if o.Enable {
			if o.Request.Waypoint == "" {
				continue
			}
			if i == 0 {
				if err := traffic.RequireAPI(o.discovery, traffic.Gateways); err != nil {
					return fmt.Errorf("--waypoint: %w", err)
				}
			}
			wp, err := inject.PlanWaypoint(ctx, o.dyn, p.ns.Name, o.Request.Waypoint)
			if err != nil {
				return err
			}
			p.waypoint = &wp
			continue
		}
		if _, ok := p.ns.Labels[inject.LabelUseWaypoint]; !ok || o.dyn == nil {
			continue
		}
		r, err := inject.PlanWaypointRemoval(ctx, o.dyn, p.ns.Name, p.ns.Labels)
		if err != nil {
			return err
		}
		p.removal = r
	}
	return nil
}

// applyWaypoint creates the namespace's waypoint Gateway (or shows it in a
// dry run) and prints it; it says whether it really created one.
func (o *InjectionLabelOptions) applyWaypoint(ctx context.Context, p plannedLabels, suffix string) (bool, error) {
	if p.waypoint == nil {
		return false, nil
	}
	gw, op := p.waypoint.Gateway, "unchanged"
	if p.waypoint.Create {
		op = "created" + suffix
		if o.DryRun != cmdutil.DryRunClient {
			var err error
			if gw, err = inject.CreateWaypoint(ctx, o.dyn, *p.waypoint, o.DryRun == cmdutil.DryRunServer); err != nil {
				return false, o.withUser(ctx, err)
			}
		}
	}
	return p.waypoint.Create && o.DryRun == cmdutil.DryRunNone, o.print(gw, op)
}

// undoWaypoint deletes the Gateway just created when labelling failed, so
// the namespace is left as it was.
func (o *InjectionLabelOptions) undoWaypoint(ctx context.Context, p plannedLabels, created bool, err error) error {
	if !created {
		return err
	}
	if derr := inject.DeleteWaypoint(ctx, o.dyn, p.ns.Name, p.waypoint.Name, false); derr != nil {
		return fmt.Errorf("%w\nand deleting gateway %s/%s, created a moment before, failed too: %v; delete it with: kubectl -n %[2]s delete gateway %[3]s", err, p.ns.Name, p.waypoint.Name, derr)
	}
	fmt.Fprintf(o.ErrOut, "deleted gateway %s/%s again: the namespace could not be labelled\n", p.ns.Name, p.waypoint.Name)
	return err
}

// waitWaypoints waits for the Deployment istiod creates for each waypoint
// and for istiod to program its Gateway.
func (o *InjectionLabelOptions) waitWaypoints(ctx context.Context, plans []plannedLabels) error {
	var errs []error
	for _, p := range plans {
		if p.waypoint == nil {
			continue
		}
		ns, name := p.ns.Name, p.waypoint.Name
		fmt.Fprintf(o.ErrOut, "waiting up to %s for the waypoint's deployment %s/%s\n", o.Timeout, ns, name)
		d, err := inject.WaitWaypoint(ctx, o.kube, o.dyn, ns, name, o.Timeout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(o.ErrOut, "waypoint %s/%s ready: deployment %s/%s has %d available, and istiod has programmed the Gateway\n", ns, name, ns, d.Name, d.Status.AvailableReplicas)
	}
	return errors.Join(errs...)
}

// withUser names the refused user in a Gateway permission error.
func (o *InjectionLabelOptions) withUser(ctx context.Context, err error) error {
	var fe *inject.GatewayForbiddenError
	if errors.As(err, &fe) && fe.User == "" {
		fe.User = o.user(ctx)
	}
	return err
}
